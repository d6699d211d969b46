#pragma once
// Strong identifier types: a CustomerId does not convert into a StripeCustomerId (userver StrongTypedef).
#include <compare>
#include <functional>
#include <string>
#include <utility>

namespace tally {

/// A string id tagged with its kind. Value type; not thread-safe.
template <typename Tag>
class Id {
public:
    Id() = default;
    explicit Id(std::string value) : value_(std::move(value)) {}
    const std::string& str() const { return value_; }
    bool empty() const { return value_.empty(); }
    auto operator<=>(const Id&) const = default;

private:
    std::string value_;
};

using CustomerId = Id<struct CustomerIdTag>;                    // Tally's own: cust_...
using StripeCustomerId = Id<struct StripeCustomerIdTag>;        // cus_...
using StripeSubscriptionId = Id<struct StripeSubscriptionIdTag>;  // sub_...
using StripeEventId = Id<struct StripeEventIdTag>;              // evt_...
using StripePriceId = Id<struct StripePriceIdTag>;              // price_...
using PlanId = Id<struct PlanIdTag>;                            // catalog key: free, starter, ...

}  // namespace tally

template <typename Tag>
struct std::hash<tally::Id<Tag>> {
    size_t operator()(const tally::Id<Tag>& id) const noexcept { return std::hash<std::string>{}(id.str()); }
};
