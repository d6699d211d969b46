#pragma once
// Proration: what a mid-period price change credits and charges, computed exactly as Stripe does (to the second
// over the current period, each line rounded to the currency's minor unit). Pure functions of their inputs.
#include <optional>

#include "domain/money.hpp"
#include "domain/result.hpp"
#include "domain/time.hpp"

namespace tally {

/// The prorations of one price change.
///   credit: the unused time of the old price, as a negative amount (Stripe's "Unused time on ..." line).
///   charge: the new price for the time it covers, as a positive amount (Stripe's "Remaining time on ..." line,
///           or the whole new period when the billing interval changes).
///   net:    credit + charge, what the customer owes (negative: the customer is owed, as account credit).
///   period: the period after the change: the rest of the current one, or a new one starting at the change
///           when the billing interval changes (Stripe resets the billing cycle anchor then).
struct Proration {
    Money credit;
    Money charge;
    Money net;
    Period period;
    bool anchor_reset = false;
};

/// An integer |amount| for the whole |period| scaled to the part [at, period.end): amount × (end − at) /
/// (end − start), rounded half away from zero. Money's proration (ProrateAmount) and credit allowances (an upgrade's
/// extra credits, issue 13) both use it. kInvalidArgument if the period is empty or at is outside [start, end).
Result<int64_t> ProrateInteger(int64_t amount, Period period, Timestamp at);

/// |period_amount| (minor units, for the whole |period|) scaled to the part [at, period.end):
/// amount × (end − at) / (end − start), rounded half away from zero to the minor unit.
/// kInvalidArgument if the period is empty or at is outside [start, end).
Result<Money> ProrateAmount(const Money& period_amount, Period period, Timestamp at);

/// Prorations for moving a subscription item from |from| to |to| (each the price's unit_amount × quantity per
/// period) at |at| within the current |period|. When |to_interval| differs from |from_interval| the new price
/// is charged for a whole new period from |at| (Stripe resets the billing cycle anchor on interval changes).
/// Source: ../shared/stripe/README.md "Prorations" (10.00 → 20.00 halfway: −5.00 + 10.00 = +5.00).
/// kInvalidArgument if the currencies differ, at is outside the period, or the new period cannot be computed.
Result<Proration> ProrateChange(const Money& from, BillingInterval from_interval, const Money& to,
                                BillingInterval to_interval, Period period, Timestamp at);

}  // namespace tally
