#pragma once
// Prepaid credits (seed 003): grants, and deductions on the app's hot path that take from them in the spend order
// of domain/credits.hpp. Every transfer carries the client's id, recorded in the transaction of its effect: a replay
// answers as the first time, the same id with other fields is refused. A deduction that spans grants writes one
// entry per grant; entries are never changed, and a grant's balance never goes below 0 (the store refuses it).
// Deductions of one customer queue on Store::WriteSerialized, so concurrent callers, on any node, never spend the
// same credit twice.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "app/ports.hpp"
#include "app/store.hpp"
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

struct CreditGrantOutcome {
    CreditGrantRecord grant;
    bool replayed = false;
};

class BillingService;

class CreditService {
public:
    /// With |billing|, a customer whose subscription to a plan with credits_monthly is active or trialing has that
    /// period's subscription grant: the plan's credits times the period's months, expiring at its end, issued once
    /// per subscription period (its transfer id is "period:<subscription>:<period start>") on the first deduction
    /// of the period, and counted in the balance before that.
    CreditService(Store& store, const Clock& clock, CreditActionCosts actions, BillingService* billing = nullptr);

    /// Issues a grant inside |tx| (a credit_granted audit entry). kInvalidArgument: amount ("amount"), id ("id"), an
    /// expiry not in the future ("expires_at"), a subscription grant (issued from the plan, not by hand: "type");
    /// kNotFound ("customer"); an id used before with other fields: idempotency_error ("id").
    Result<CreditGrantOutcome> Grant(StoreTx& tx, const CreditGrantInput& in);
    /// Spends inside |tx|. kInsufficientCredits ("amount") with nothing written; kInvalidArgument for an amount
    /// ("amount"), both or neither of amount and action ("amount"), an id ("id"); kNotFound for an unknown customer
    /// ("customer") or action ("action"); idempotency_error ("id") for a reused id with other fields.
    Result<CreditDeduction> Deduct(StoreTx& tx, const CreditDeductInput& in);
    /// kNotFound ("id") for an unknown customer.
    Result<CreditBalance> Balance(const CustomerId& customer);
    /// Every grant, oldest first. kNotFound ("id").
    Result<std::vector<CreditGrantRecord>> Grants(const CustomerId& customer);

    const CreditActionCosts& actions() const { return actions_; }

    /// `tally ledger verify`: every invariant of the ledger, read in one snapshot. Returns the violations found
    /// (none: the ledger is exact): a grant whose balance is not the sum of its entries, or outside 0..amount; a
    /// grant transfer that is not one entry of +amount; a deduction whose entries are not negative or do not sum to
    /// -amount; an entry of an unknown transfer or grant, or of another customer's grant.
    Result<std::vector<std::string>> Verify();

private:
    /// |subscription_now|: the time subscription grants are judged at (SubscriptionNow).
    Result<CreditBalance> BalanceIn(StoreTx& tx, const CustomerId& customer, Timestamp now, Timestamp subscription_now);
    /// Subscription grants expire on the subscription's clock: once Stripe reports a later period (also when its
    /// clock runs ahead of Tally's, as a test clock does), the earlier period's grant is over. max(now, the current
    /// period's start).
    Result<Timestamp> SubscriptionNow(StoreTx& tx, const CustomerRecord& customer, Timestamp now);
    /// The current period's subscription grant the customer is due and does not have yet, if any.
    Result<std::optional<CreditGrantRecord>> DuePeriodGrant(StoreTx& tx, const CustomerRecord& customer, Timestamp now);

    Store& store_;
    const Clock& clock_;
    CreditActionCosts actions_;
    BillingService* billing_;
};

}  // namespace tally
