#pragma once
// JSON shapes of the v1 API. Times are Unix seconds and money integer minor units, as in Stripe's API.
#include <boost/json/value.hpp>

#include "app/billing_history.hpp"
#include "app/billing_service.hpp"
#include "app/user_view.hpp"
#include "app/event_outbox.hpp"
#include "app/webhook_endpoints.hpp"
#include "app/store.hpp"

namespace tally::http {

boost::json::value CustomerJson(const CustomerView& view);
boost::json::value EntitlementsJson(const CustomerView& view);
/// {"id","object":"plan","name","role","rank","active","archived_at","prices":[{"id","lookup_key","interval",
/// "interval_count","unit_amount","currency","stripe_price_id","active","created"}],"features","limits",
/// "credits_monthly","created","updated","stripe_product_id","stripe_sync","stripe_sync_error"}.
boost::json::value PlanJson(const PlanRecord& plan);
/// {"meter","kind","mode","unit","current","limit","remaining","percent","overage","period_start","resets_at"}:
/// percent is floor(100 * current / limit) (null without a limit); resets_at is the counter's period end.
boost::json::value MeterStateJson(const MeterState& state);
/// A recorded usage event (POST /v1/usage, an item of POST /v1/usage/batch): {object: "usage_record", customer,
/// meter, kind, mode, unit, action, value, timestamp, idempotency_key, current, limit, remaining, percent, overage,
/// period_start, resets_at, allowed, reason, recorded}, from the event alone, so a replay of its key renders the
/// same (kind, mode and unit as the catalog declares the meter now; null if it was removed).
boost::json::value UsageRecordJson(const UsageEventRecord& record, const Meter* meter);
/// {"object":"limit_override","customer","meter","limit","extra","expires_at","reason","created"}.
boost::json::value LimitOverrideJson(const LimitOverrideRecord& o);
boost::json::value UsageThresholdJson(const CustomerId& customer, const MeterState& state, int threshold);
boost::json::value AuditJson(const AuditEntry& entry);
boost::json::value InboxJson(const InboxEvent& event);
/// {"id","object":"api_key","name","scope","created","last_used_at","revoked_at"}, plus "secret" when given (only
/// in the response that creates the key). The digest is never rendered.
boost::json::value ApiKeyJson(const ApiKeyRecord& key, const std::string& secret = {});
/// {"id","object":"subscription","customer",...}: the subscription object of the API and of subscription.* events.
boost::json::value SubscriptionJson(const SubscriptionRecord& s, const std::string& customer_id);
boost::json::value InvoiceJson(const InvoiceRecord& invoice, const std::string& customer_id);
/// {"id","object":"payment","type":"payment_intent"|"charge","customer","stripe_customer_id","amount",
/// "amount_refunded","currency","status","failure_message","created"}.
boost::json::value PaymentJson(const PaymentRecord& payment, const std::string& customer_id);
/// The rows as CSV (a header record, then one per row; text fields disarmed against spreadsheet formulas).
std::string InvoicesCsv(const std::vector<HistoryRow<InvoiceRecord>>& rows);
std::string PaymentsCsv(const std::vector<HistoryRow<PaymentRecord>>& rows);
/// {"id","object":"webhook_endpoint","url","description","enabled_events","status","disabled_reason","created"},
/// plus "secret" when |with_secret| (only in the responses that create the endpoint or roll its secret).
boost::json::value WebhookEndpointJson(const WebhookEndpointRecord& endpoint, bool with_secret);
boost::json::value DeliveryAttemptJson(const DeliveryAttemptRecord& attempt);
/// {"object":"member","customer","user","email","role","created","updated"}.
boost::json::value MemberJson(const MemberRecord& member);
/// {"id","object":"user","effective_role","memberships":[{"customer","type","role","customer_role","plan"}]}.
boost::json::value UserJson(const UserView& user);
/// {"id","object":"customer_session","customer","user","created","expires_at","revoked_at"}, plus "token" when given
/// (only in the response that creates the session). The token's digest is never rendered.
boost::json::value CustomerSessionJson(const CustomerSessionRecord& session, const std::string& token = {});

/// A credit grant: {"id","object":"credit_grant","customer","type","amount","remaining","priority","expires_at",
/// "transfer","reason","created"}.
boost::json::value CreditGrantJson(const CreditGrantRecord& g);
/// {"id","object":"credit_purchase","customer","bundle","credits","amount","currency","source","status",
///  "payment_intent","checkout_session","checkout_url","grant","failure_code","failure_message","amount_refunded",
///  "credits_refunded","credits_refund_spent","created","updated"}; "" fields are null.
boost::json::value CreditPurchaseJson(const CreditPurchaseRecord& p);
/// {"object":"auto_purchase","customer","enabled","paused","threshold","bundle","max_per_month",
///  "purchases_this_month","failures","disabled_reason","pending_purchase","next_attempt_at","updated"}, and
/// "purchase" (a credit purchase) when |purchase| is given.
boost::json::value AutoPurchaseJson(const AutoPurchaseRecord& a, int64_t purchases_this_month,
                                    const CreditPurchaseRecord* purchase = nullptr);

/// The ApiObjectRenderer port over these views: events carry exactly the API's objects. Thread-safe, stateless.
class JsonObjectRenderer final : public ApiObjectRenderer {
public:
    std::string Customer(const CustomerView& view) const override;
    std::string Entitlements(const CustomerView& view) const override;
    std::string Subscription(const SubscriptionRecord& subscription, const std::string& customer_id) const override;
    std::string Invoice(const InvoiceRecord& invoice, const std::string& customer_id) const override;
    std::string Member(const MemberRecord& member) const override;
    std::string User(const UserView& user) const override;
    std::string Plan(const PlanRecord& plan) const override;
    std::string UsageThreshold(const CustomerId& customer, const MeterState& state, int threshold) const override;
    std::string CreditGrant(const CreditGrantRecord& grant) const override;
    std::string CreditPurchase(const CreditPurchaseRecord& purchase) const override;
    std::string AutoPurchase(const AutoPurchaseRecord& settings, int64_t purchases_this_month,
                             const CreditPurchaseRecord* purchase) const override;
    std::string CreditThreshold(const CreditThresholdCrossing& crossing) const override;
    std::string Envelope(const AppEventRecord& event, std::string_view object_json,
                         const Attributes& previous) const override;
};

/// {"error":{"type","code","message","param"}}; |type| and |code| follow Stripe's vocabulary.
std::string ErrorBody(const std::string& type, const std::string& code, const std::string& message,
                      const std::string& param);

}  // namespace tally::http
