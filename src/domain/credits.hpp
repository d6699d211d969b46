#pragma once
// Prepaid credits (seed 003), in TigerBeetle's discipline: credits live in grants (Orb's credit blocks), every
// movement is a transfer with a client-supplied id, and a deduction that spans grants takes from each in the spend
// order below. Pure rules, no I/O; amounts are integers.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "domain/ids.hpp"
#include "domain/money.hpp"
#include "domain/result.hpp"
#include "domain/time.hpp"

namespace tally {

constexpr int64_t kCreditAmountMax = int64_t{1} << 53;  // JSON's exact integers
constexpr size_t kCreditTransferIdLengthMax = 255;       // a client-supplied transfer id (Stripe's idempotency keys)

/// subscription: issued from the plan each period, expires at its end; bundle: bought; promotional: an admin's gift.
enum class GrantType { kSubscription, kBundle, kPromotional };
Result<GrantType> ParseGrantType(std::string_view text);  // param "type"
const char* GrantTypeName(GrantType type);
/// Spent first by default: subscription grants (seed 003: "subscription credits first"), then the rest.
int DefaultGrantPriority(GrantType type);  // 0 for subscription, 10 otherwise; lower is spent first

struct CreditGrantState {
    std::string id;
    GrantType type = GrantType::kPromotional;
    int64_t remaining = 0;
    int priority = 10;
    std::optional<Timestamp> expires_at;
    Timestamp created;
};

/// Whether the grant can be spent at |now|: something left and not expired (expires_at is exclusive).
bool GrantUsable(const CreditGrantState& grant, Timestamp now);

/// The spend order: lower priority first, then the soonest expiry (no expiry last), then promotional before paid
/// (bundle), then the oldest, then by id (a total order, so every node agrees).
bool SpendsBefore(const CreditGrantState& a, const CreditGrantState& b);

struct CreditDraw {
    std::string grant;
    int64_t amount = 0;
};

/// Takes |amount| (1..kCreditAmountMax) from the usable |grants| in spend order: one draw per grant touched.
/// kInsufficientCredits (param "amount") when they hold less than |amount| in total; nothing is taken then.
Result<std::vector<CreditDraw>> PlanDeduction(std::vector<CreditGrantState> grants, int64_t amount, Timestamp now);

/// What a settled hold gives back: of the |held| draws (in the order they were taken, the spend order), the first
/// |keep| credits stay spent and the rest returns, last-taken first, so a capture spends exactly what a deduction
/// of |keep| would have (TigerBeetle's post_pending_transfer of a smaller amount). One draw per grant returned to;
/// kInvalidArgument ("amount") unless 0 <= keep <= the draws' total.
Result<std::vector<CreditDraw>> PlanReturn(const std::vector<CreditDraw>& held, int64_t keep);

/// A reservation's lifetime in seconds: default, and the most a caller may ask for (TigerBeetle's pending timeout).
constexpr int64_t kCreditReservationExpiresInDefault = 600;
constexpr int64_t kCreditReservationExpiresInMax = int64_t{7} * 86400;

/// Ids Tally derives for transfers of its own begin with these; a client's transfer id may not.
/// "period:<subscription>:<start>" a period grant, "capture:<reservation>", "release:<reservation>",
/// "reversal:<transfer>", "expire:<grant>:<cause>", "purchase:<purchase>" (a bundle bought),
/// "refund:<purchase>:<amount refunded so far>" (credits taken back after a refund).
constexpr std::string_view kDerivedTransferIdPrefixes[] = {"period:", "capture:", "release:", "reversal:",
                                                           "expire:", "purchase:", "refund:"};

/// Percents of a period's subscription credits used at which credits.threshold_reached is emitted, once each per
/// period (seed 003, ticket 5.1: 75%, 90%, 100%).
inline const std::vector<int> kCreditThresholdPercents = {75, 90, 100};

/// The name credits.threshold_reached marks are kept under beside the meters' (meter names are single words, so
/// none is this).
constexpr const char* kCreditThresholdMeter = "credits subscription";

/// What credits.threshold_reached carries: |used| of the period grant's |allowance| reached |threshold| percent.
struct CreditThresholdCrossing {
    CustomerId customer;
    std::string grant;
    int threshold = 0;
    int64_t used = 0;
    int64_t allowance = 0;
    Period period;  // the subscription period the grant is for
};

/// The extra credits of an upgrade mid-period (issue 13): the difference between the new and the old period
/// allowance, prorated to the second over [at, period.end) as money is (ProrateInteger). 0 for a downgrade or no
/// change (a downgrade takes effect at the next period). kInvalidArgument if |at| is outside the period.
Result<int64_t> UpgradeCredits(int64_t old_allowance, int64_t new_allowance, Period period, Timestamp at);

/// A credit bundle of the catalog (the file's "credit_bundles"; issue 13's defaults: 1,000 credits for 10.00 USD,
/// 5,000 for 45.00, 20,000 for 160.00). Bought through Checkout or off-session; its credits roll over unless
/// |expires_in_days| is set (then they expire that many days after the purchase is paid).
struct CreditBundle {
    std::string id;  // "credits_1000"
    std::string name;
    int64_t credits = 0;  // 1..kCreditAmountMax
    Money price;          // what the customer pays, > 0
    std::optional<int64_t> expires_in_days;
};
constexpr int64_t kCreditBundleExpiresInDaysMax = 3650;

/// kInvalidArgument naming the field (".credits", ".price", ".expires_in_days", ".id") of a bundle that cannot be
/// sold: an id that is not 1..64 of [A-Za-z0-9_-], credits outside 1..kCreditAmountMax, a price not above 0, an
/// expiry outside 1..kCreditBundleExpiresInDaysMax days.
Status ValidateCreditBundle(const CreditBundle& bundle);

/// What a refund of a bundle purchase takes back (issue 13: "takes back the unused part of that bundle, never
/// more, and records the part already spent"). The credits due back are the bundle's |credits| in proportion to
/// the |refunded_total| of the |amount_paid| (Stripe's charge.amount_refunded, cumulative over partial refunds),
/// rounded half away from zero as prorations are, so a full refund is every credit. Of what is due beyond
/// |accounted_before| (taken back or found spent by earlier refunds), |take| comes out of the grant's |remaining|
/// and |spent| is the rest, already used.
struct CreditRefundPlan {
    int64_t take = 0;
    int64_t spent = 0;
};
/// kInvalidArgument unless 0 < amount_paid, 0 <= refunded_total <= amount_paid, 1 <= credits <= kCreditAmountMax,
/// 0 <= accounted_before <= credits and 0 <= remaining <= credits.
Result<CreditRefundPlan> PlanRefund(int64_t credits, int64_t amount_paid, int64_t refunded_total,
                                    int64_t accounted_before, int64_t remaining);

/// Auto-purchase (issue 13, item 6; Metronome's auto-recharge, Lago's wallet top-up rules): after this many
/// consecutive failed payments it disables itself.
constexpr int64_t kAutoPurchaseFailuresMax = 3;
constexpr int64_t kAutoPurchaseMaxPerMonthMax = 1000;
constexpr int64_t kAutoPurchaseMaxPerMonthDefault = 5;
/// How long one node holds a due attempt it claimed before another may take it over (a node that died mid-charge):
/// longer than an attempt's worst case (three Stripe calls, each with its client's retries and timeouts); the
/// takeover reuses the attempt's Stripe idempotency key, so Stripe answers it as the first time.
constexpr int64_t kAutoPurchaseLeaseSeconds = 900;
/// When Stripe cannot be reached, the attempt is tried again this much later (not counted as a failure).
constexpr int64_t kAutoPurchaseUnavailableRetrySeconds = 60;
/// Seconds until the next attempt after |failures| (1..) consecutive failed payments: 5 minutes, then 30, then 3
/// hours (×6 each time), at most a day. kInvalidArgument for failures < 1.
Result<int64_t> AutoPurchaseRetryDelay(int64_t failures);

/// kInvalidArgument naming |param| unless 1 <= amount <= kCreditAmountMax.
Status ValidateCreditAmount(int64_t amount, const char* param);
/// kInvalidArgument (param "id") unless 1..255 printable ASCII characters, not starting with a derived prefix.
Status ValidateTransferId(std::string_view id);

}  // namespace tally
