#pragma once
#include <boost/json/object.hpp>

#include "app/ports.hpp"

namespace tally {

/// Decodes Stripe event JSON with Boost.JSON into DecodedEvent. Accepts both API shapes Stripe has used
/// for the fields Tally reads (period on the subscription or on its items; invoice.subscription or
/// invoice.parent.subscription_details.subscription). Stateless, so thread-safe.
class StripeEventDecoder final : public EventDecoder {
public:
    Result<EventEnvelope> DecodeEnvelope(std::string_view payload) const override;
    Result<DecodedEvent> Decode(std::string_view payload) const override;
    Result<std::pair<bool, bool>> ChainEvidence(std::string_view a, std::string_view b) const override;
};

/// A bare Stripe subscription object (an API response, not an event) decoded as events' data.object is;
/// kInvalidArgument naming the field (paths read "data.object.<field>").
Result<StripeSubscriptionData> DecodeStripeSubscription(const boost::json::object& subscription);
/// A subscription schedule object (a schedule API answer), decoded as subscription_schedule.* events' are.
Result<StripeScheduleData> DecodeStripeSchedule(const boost::json::object& schedule);
/// A PaymentIntent object (an API answer), decoded as payment_intent.* events' objects are.
Result<StripePaymentData> DecodeStripePaymentIntent(const boost::json::object& intent);
/// A Charge object (an API answer), decoded as charge.* events' objects are.
Result<StripePaymentData> DecodeStripeCharge(const boost::json::object& charge);

}  // namespace tally
