#pragma once
// Prepaid credits (seed 003): grants, and deductions on the app's hot path that take from them in the spend order
// of domain/credits.hpp. Every transfer carries the client's id, recorded in the transaction of its effect: a replay
// answers as the first time, the same id with other fields is refused. A deduction that spans grants writes one
// entry per grant; entries are never changed, and a grant's balance never goes below 0 (the store refuses it).
// Deductions of one customer queue on Store::WriteSerialized, so concurrent callers, on any node, never spend the
// same credit twice.
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "app/billing_service.hpp"
#include "app/ports.hpp"
#include "app/store.hpp"
#include "app/write_group.hpp"
#include "domain/credits.hpp"

namespace tally {

/// The catalog file's "credit_actions": what each priced action costs (seed 003: SEND_EMAIL 1, ANALYZE_LEAD 2,
/// GENERATE_CAMPAIGN 5).
using CreditActionCosts = std::map<std::string, int64_t>;

struct CreditBalance {
    int64_t subscription = 0;
    int64_t bundle = 0;
    int64_t promotional = 0;
    int64_t total() const { return subscription + bundle + promotional; }
};

/// POST /v1/credits/grants: an admin's gift (promotional) or a bundle granted by hand.
struct CreditGrantInput {
    CustomerId customer;
    std::string id;  // the transfer's id
    GrantType type = GrantType::kPromotional;
    int64_t amount = 0;
    std::optional<Timestamp> expires_at;
    std::optional<int> priority;  // default DefaultGrantPriority(type)
    std::string reason;
    std::string actor;
};

/// POST /v1/credits/deduct: |amount|, or the cost of |action|.
struct CreditDeductInput {
    CustomerId customer;
    std::string id;
    std::optional<int64_t> amount;
    std::string action;
    std::string metadata;  // the caller's JSON object, stored as given
    std::string actor;
};

struct CreditDeduction {
    CreditTransferRecord transfer;
    std::vector<CreditDraw> breakdown;
    CreditBalance balance;  // after it
    bool replayed = false;
};

/// A deduction submitted to a group committer (GroupedWrite with CreditService::deductions()): its input, and its
/// answer or refusal once its group ran.
struct PendingDeduction final : BatchedWriteItem {
    CreditDeductInput in;
    std::optional<Result<CreditDeduction>> out;
};

struct CreditGrantOutcome {
    CreditGrantRecord grant;
    bool replayed = false;
};

/// POST /v1/credits/reservations: holds |amount| for |expires_in| seconds.
struct CreditReserveInput {
    CustomerId customer;
    std::string id;  // the reservation's, and its "reserve" transfer's
    int64_t amount = 0;
    int64_t expires_in = kCreditReservationExpiresInDefault;
    std::string metadata;
    std::string actor;
};

/// A reservation after a call, with the credits its call moved (taken for a hold, given back on a settlement) and
/// the balance after it.
struct CreditReservationOutcome {
    CreditReservationRecord reservation;
    std::vector<CreditDraw> breakdown;
    CreditBalance balance;
    bool replayed = false;
};

/// A reversal: its transfer ("reversal:<id>"), the credits returned per grant, the balance after.
struct CreditReversal {
    CreditTransferRecord transfer;
    std::vector<CreditDraw> breakdown;
    CreditBalance balance;
    bool replayed = false;
};

/// GET /v1/customers/{id}/credits (seed 003's CreditBalance).
struct CreditSummary {
    CreditBalance balance;  // spendable now
    int64_t reserved = 0;   // held by pending reservations (not in the balance)
    /// Spent in the current period (deductions and captures, less reversals, since |period|'s start): the
    /// subscription's period, or the calendar month in UTC without one.
    int64_t used_this_period = 0;
    Period period;
    std::optional<Timestamp> next_reset_at;  // when the subscription's credits renew (none without credits_monthly)
    std::optional<std::string> plan;
};

class BillingService;
class EventOutbox;

/// The kinds of a customer's notification feed (seed 003, ticket 5.1): each threshold of the period's subscription
/// credits, each renewal (a plan grant), each auto-purchase and each failure of one.
inline const std::vector<std::string> kNotificationKinds = {"credits.threshold_reached", "credits.granted",
                                                            "credits.auto_purchase_succeeded",
                                                            "credits.auto_purchase_failed"};
constexpr int kNotificationPageMax = 100;
constexpr int kCreditSweepCustomersMax = 100;         // customers one sweep settles at most (the rest: the next one)

class CreditService {
public:
    /// With |billing|, a customer whose subscription to a plan with credits_monthly is active or trialing has that
    /// period's subscription grant: the plan's credits times the period's months, expiring at its end, issued once
    /// per subscription period (its transfer id is "period:<subscription>:<period start>") on the first deduction
    /// of the period, and counted in the balance before that.
    CreditService(Store& store, const Clock& clock, CreditActionCosts actions, BillingService* billing = nullptr);
    ~CreditService();
    CreditService(const CreditService&) = delete;
    CreditService& operator=(const CreditService&) = delete;

    /// Issues a grant inside |tx| (a credit_granted audit entry). kInvalidArgument: amount ("amount"), id ("id"), an
    /// expiry not in the future ("expires_at"), a subscription grant (issued from the plan, not by hand: "type");
    /// kNotFound ("customer"); an id used before with other fields: idempotency_error ("id").
    Result<CreditGrantOutcome> Grant(StoreTx& tx, const CreditGrantInput& in);
    /// The bundle grant of paid purchase |p| ("purchase:<id>", type bundle, |p|'s credits, expiring |p|'s
    /// expires_in_days from now when set), issued inside |tx| once: a second call returns the first grant.
    Result<CreditGrantRecord> GrantPurchase(StoreTx& tx, const CreditPurchaseRecord& p);
    /// A refund of paid purchase |p| now totalling |refunded_total| (minor units, Stripe's amount_refunded): takes
    /// back from its grant what PlanRefund says ("refund:<id>:<total>", kind refund) and moves |p|'s refund fields
    /// (the caller stores |p|). A total not above what |p| has seen changes nothing.
    Result<CreditRefundPlan> TakeBackRefund(StoreTx& tx, CreditPurchaseRecord& p, int64_t refunded_total);
    /// Spends inside |tx|. kInsufficientCredits ("amount") with nothing written; kInvalidArgument for an amount
    /// ("amount"), both or neither of amount and action ("amount"), an id ("id"); kNotFound for an unknown customer
    /// ("customer") or action ("action"); idempotency_error ("id") for a reused id with other fields.
    Result<CreditDeduction> Deduct(StoreTx& tx, const CreditDeductInput& in);
    /// Deduct for each of |items|, in order, as if one after the other, with each customer's grants read and
    /// settled once and the transfers, entries and grants of all of them written together (one statement per 64
    /// rows, one update per grant). Each item's answer, or its refusal with nothing written for it, is put in its
    /// |out|. An error is the store's failure (nothing of the batch is to be kept). A customer whose settling fails
    /// (its period grant, its lapsed holds and grants) has each of its deductions refused with that error, and the
    /// settling undone.
    Status DeductBatch(StoreTx& tx, const std::vector<PendingDeduction*>& items);
    /// The WriteBatch that runs a group's deductions (PendingDeduction items) through DeductBatch.
    const WriteBatch& deductions() const { return *deductions_; }
    /// Holds credits inside |tx|, taken from grants in the spend order (they cannot be spent twice), until captured,
    /// released, or |expires_in| passes (then released by the next write for the customer, and never counted as
    /// held after it). Errors as Deduct's, and kInvalidArgument ("expires_in") outside 1..
    /// kCreditReservationExpiresInMax.
    Result<CreditReservationOutcome> Reserve(StoreTx& tx, const CreditReserveInput& in);
    /// Spends |amount| (1..held) of a pending reservation and gives the rest back (PlanReturn). kNotFound ("id");
    /// kConflict reservation_settled once it is captured, released or expired (a capture replayed with the same
    /// amount answers as the first time); kInvalidArgument ("amount") above the amount held.
    Result<CreditReservationOutcome> Capture(StoreTx& tx, const std::string& reservation_id, int64_t amount,
                                             const std::string& actor);
    /// Gives a pending reservation's credits back. kNotFound ("id"); kConflict reservation_settled once captured;
    /// released or expired: answers as it is (replayed).
    Result<CreditReservationOutcome> Release(StoreTx& tx, const std::string& reservation_id, const std::string& actor);
    /// Returns a deduction's (or a capture's) credits to the grants they came from; a part whose grant has expired
    /// since is expired again at once, in the same transaction. Transfer id "reversal:<id>": once per transfer, a
    /// repeat answers as the first time. kNotFound ("id"); kInvalidArgument transfer_not_reversible ("id") for
    /// anything else (a grant, a reversal, a hold).
    Result<CreditReversal> Reverse(StoreTx& tx, const std::string& transfer_id, const std::string& actor);
    /// The customer whose ledger |transfer_id| (or a reservation |transfer_id|) belongs to, read before the
    /// serialized write that changes it. kNotFound ("id").
    Result<CustomerId> TransferCustomer(const std::string& transfer_id);
    Result<CustomerId> ReservationCustomer(const std::string& reservation_id);
    Result<CreditReservationRecord> GetReservation(const std::string& reservation_id);

    /// kNotFound ("id") for an unknown customer.
    Result<CreditBalance> Balance(const CustomerId& customer);
    /// The balance with what is held, used this period and when it resets. kNotFound ("id").
    Result<CreditSummary> Summary(const CustomerId& customer);
    /// The customer's transfers, newest first (CreditTransferFilter). kNotFound ("id"); kNotFound
    /// ("starting_after") for a transfer not of this customer.
    Result<std::vector<CreditTransferRecord>> Transactions(const CreditTransferFilter& filter);
    /// Every grant, oldest first. kNotFound ("id").
    Result<std::vector<CreditGrantRecord>> Grants(const CustomerId& customer);

    /// Called inside the transaction that stored a subscription from Stripe (a webhook or an API answer), on the
    /// subscription's customer: the period grant due is issued at the period's start (and a trial's) and the
    /// previous one's rest expires, without waiting for a deduction; an upgrade within the period grants the
    /// difference between the plans' allowances prorated to the second over the rest of it (UpgradeCredits,
    /// transfer "period:<subscription>:<start>:upgrade:<plan>", once per plan and period). A downgrade changes
    /// nothing before the next period.
    Status OnSubscriptionStored(StoreTx& tx, const CustomerId& customer, const std::optional<SubscriptionRecord>& before,
                                const SubscriptionRecord& after);

    /// The customer's notifications, newest first (dismissed ones with |include_dismissed|). kNotFound ("id"), or
    /// ("starting_after") for a notification not of this customer.
    Result<std::vector<NotificationRecord>> Notifications(const CustomerId& customer, bool include_dismissed,
                                                          const std::optional<std::string>& starting_after, int limit);
    /// Dismisses one (again: unchanged). kNotFound ("notification") unless it is the customer's.
    Result<NotificationRecord> DismissNotification(const CustomerId& customer, const std::string& id);
    /// Each kind of kNotificationKinds and whether the customer keeps it. kNotFound ("id").
    Result<std::vector<std::pair<std::string, bool>>> NotificationPreferences(const CustomerId& customer);
    /// Turns kinds on or off. kInvalidArgument ("kinds.<kind>") for a kind not in kNotificationKinds; kNotFound.
    Result<std::vector<std::pair<std::string, bool>>> SetNotificationPreferences(
        const CustomerId& customer, const std::vector<std::pair<std::string, bool>>& kinds, const std::string& actor);

    const CreditActionCosts& actions() const { return actions_; }

    /// Called inside the transaction of each hold, and of each customer's deductions in a DeductBatch (once, after
    /// the last of them), with the balance left (auto-purchase: CreditPurchaseService::OnSpent). An error fails the
    /// write (a batch's: the store's failure). Set before use.
    using SpendListener = std::function<Status(StoreTx& tx, const CustomerId& customer, const CreditBalance& after)>;
    void SetSpendListener(SpendListener listener) { spend_listener_ = std::move(listener); }
    /// Adds a notification in |tx| unless the customer turned |kind| off.
    Status Notify(StoreTx& tx, const CustomerId& customer, const std::string& kind, const std::string& message,
                  const std::string& object_json, Timestamp now);

    /// `tally ledger verify`: every invariant of the ledger, read in one snapshot. Returns the violations found
    /// (none: the ledger is exact): a grant whose balance is not the sum of its entries, or outside 0..amount; a
    /// grant transfer that is not one entry of +amount; a deduction whose entries are not negative or do not sum to
    /// -amount; an entry of an unknown transfer or grant, or of another customer's grant.
    Result<std::vector<std::string>> Verify();

    /// The expiry sweep (run by every node's worker every --credit-sweep-interval-ms, 30 s by default): settles up to |limit|
    /// customers whose reservations or grants have lapsed by now, as their next write would (a lapsed reservation
    /// is released, a lapsed grant's credits left get their expiry transfer and credits.expired), each in its own
    /// transaction serialized on the customer's credits. Idempotent: the transfers' ids say what was settled, so
    /// nodes sweeping together settle each once. Returns how many customers it settled.
    Result<int> SettleLapsed(int limit = kCreditSweepCustomersMax);

private:
    struct Clocks {
        Timestamp now;
        Timestamp subscription_now;  // SubscriptionNow
    };
    /// The usable balance. |reserved| (with_holds): what pending reservations hold, and the credits of those past
    /// their expiry but not yet released counted as given back. Write paths settle those first (Settle) and pass
    /// nullptr.
    Result<CreditBalance> BalanceIn(StoreTx& tx, const CustomerId& customer, const Clocks& at,
                                    int64_t* reserved = nullptr);
    /// The usable balance of |grants| as they are.
    static CreditBalance BalanceOf(const std::vector<CreditGrantRecord>& grants, const Clocks& at);
    /// A write's preamble for a customer: the period grant due is issued, lapsed reservations are released and
    /// grants past their expiry with credits left get their expiry transfer. |grants_out|: the customer's grants
    /// as they are afterwards.
    Result<Clocks> Settle(StoreTx& tx, const CustomerRecord& customer,
                          std::vector<CreditGrantRecord>* grants_out = nullptr);
    /// Takes |amount| from the usable |grants| (the customer's, as stored) in the spend order for |transfer_id|,
    /// moving their remaining in memory too. kInsufficientCredits, nothing taken.
    Result<std::vector<CreditDraw>> Take(StoreTx& tx, std::vector<CreditGrantRecord>& grants,
                                         const std::string& transfer_id, int64_t amount, const Clocks& at);
    /// The draws that take |amount| from the usable |grants| in the spend order (PlanDeduction); nothing moves.
    /// kInsufficientCredits.
    static Result<std::vector<CreditDraw>> PlanTake(const std::vector<CreditGrantRecord>& grants, int64_t amount,
                                                    const Clocks& at);
    /// Moves |draws| out of |grants| in memory, adding their entries for |transfer_id| to |entries| and marking the
    /// grants they moved in |touched| (as many as |grants|).
    static void ApplyDraws(std::vector<CreditGrantRecord>& grants, const std::vector<CreditDraw>& draws,
                           const std::string& transfer_id, Timestamp now, std::vector<CreditEntryRecord>& entries,
                           std::vector<bool>& touched);
    /// Gives |back| to its grants for |transfer_id|; a grant no longer usable expires again at once.
    Status GiveBack(StoreTx& tx, const CustomerId& customer, const std::string& transfer_id,
                    const std::vector<CreditDraw>& back, const Clocks& at);
    /// After |returned| credits came back to grant |g| by |transfer_id|: if |g| is a purchase's whose refunds found
    /// credits already spent, those are taken back now ("refund:<purchase>:<transfer>"), moving them from
    /// credits_refund_spent to credits_refunded.
    Status TakeBackOwed(StoreTx& tx, CreditGrantRecord& g, int64_t returned, const std::string& transfer_id,
                        const Clocks& at);
    /// Writes grant |g|'s expiry: "expire:<grant>:<cause>", what is left, to 0.
    Status Expire(StoreTx& tx, const CreditGrantRecord& g, const std::string& cause, const Clocks& at);
    /// Grant's work without the client-id check (GrantPurchase's ids are derived).
    Result<CreditGrantOutcome> IssueGrant(StoreTx& tx, const CreditGrantInput& in);
    /// Settles pending reservation |r|: keeps |keep| spent, gives the rest back, as |status|.
    Result<CreditReservationOutcome> SettleHold(StoreTx& tx, CreditReservationRecord r, int64_t keep,
                                                const std::string& status, const std::string& actor,
                                                const Clocks& at);
    Result<CreditReservationOutcome> ReplayHold(StoreTx& tx, const std::string& transfer_id,
                                                const CreditReservationRecord& r);
    /// Issues |g| (a grant of the plan: a period's, or an upgrade's) with its transfer, audit entry and event.
    Status IssuePlanGrant(StoreTx& tx, const CreditGrantRecord& g, const Clocks& at);
    /// credits.threshold_reached for each of kCreditThresholdPercents of the period's subscription credits that
    /// |draws| took the customer past, once per threshold and period. |grants|: as they are after the draws.
    Status AnnounceThresholds(StoreTx& tx, const std::vector<CreditGrantRecord>& grants,
                              const std::vector<CreditDraw>& draws, const Clocks& at);
    EventOutbox* outbox() const;
    /// The customer's plan and subscriptions (none without a BillingService), read once per call.
    Result<std::optional<CustomerView>> ViewOf(StoreTx& tx, const CustomerRecord& customer, Timestamp now);
    /// Subscription grants expire on the subscription's clock: once Stripe reports a later period (also when its
    /// clock runs ahead of Tally's, as a test clock does), the earlier period's grant is over. max(now, the current
    /// period's start).
    static Timestamp SubscriptionNow(const std::optional<CustomerView>& view, Timestamp now);
    /// The current period's subscription grant the customer is due and does not have yet, if any.
    Result<std::optional<CreditGrantRecord>> DuePeriodGrant(StoreTx& tx, const CustomerRecord& customer,
                                                            const std::optional<CustomerView>& view, Timestamp now);

    Store& store_;
    const Clock& clock_;
    CreditActionCosts actions_;
    BillingService* billing_;
    SpendListener spend_listener_;
    std::unique_ptr<WriteBatch> deductions_;
};

}  // namespace tally
