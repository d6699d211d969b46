#include "domain/proration.hpp"

namespace tally {
namespace {
// GCC and Clang provide 128-bit integers on every 64-bit target Tally builds for.
__extension__ typedef __int128 Int128;  // NOLINT(modernize-use-using): __extension__ needs the typedef form
}  // namespace

Result<int64_t> ProrateInteger(int64_t amount, Period period, Timestamp at) {
    const int64_t total = period.length_seconds();
    if (total <= 0) return InvalidArgument("proration period is empty");
    if (!period.Contains(at)) return InvalidArgument("proration date is outside the current period", "proration_date");
    const int64_t remaining = period.end.unix_seconds() - at.unix_seconds();
    // |amount| < 2^63 and remaining <= total < 2^40 for any real period, so the product fits in 128 bits.
    const Int128 numerator = static_cast<Int128>(amount) * remaining;
    const Int128 magnitude = numerator < 0 ? -numerator : numerator;
    const Int128 rounded = (2 * magnitude + total) / (2 * static_cast<Int128>(total));  // half away from zero
    return static_cast<int64_t>(numerator < 0 ? -rounded : rounded);
}

Result<Money> ProrateAmount(const Money& period_amount, Period period, Timestamp at) {
    TALLY_ASSIGN_OR_RETURN(const int64_t amount, ProrateInteger(period_amount.amount_minor(), period, at));
    return Money(amount, period_amount.currency());
}

Result<Proration> ProrateChange(const Money& from, BillingInterval from_interval, const Money& to,
                                BillingInterval to_interval, Period period, Timestamp at) {
    if (!(from.currency() == to.currency())) {
        return InvalidArgument("cannot prorate between currencies " + from.currency().code() + " and " +
                               to.currency().code());
    }
    TALLY_ASSIGN_OR_RETURN(Money unused, ProrateAmount(from, period, at));
    TALLY_ASSIGN_OR_RETURN(Money credit, Money(0, from.currency()).Subtract(unused));
    Proration p{credit, to, to, Period{at, period.end}, false};
    if (from_interval == to_interval) {
        TALLY_ASSIGN_OR_RETURN(p.charge, ProrateAmount(to, period, at));
    } else {
        TALLY_ASSIGN_OR_RETURN(Timestamp end, NthBoundary(at, to_interval, 1));
        p.period = Period{at, end};
        p.anchor_reset = true;
    }
    TALLY_ASSIGN_OR_RETURN(p.net, p.credit.Add(p.charge));
    return p;
}

}  // namespace tally
