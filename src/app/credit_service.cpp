#include "app/credit_service.hpp"

#include <algorithm>
#include <map>

#include "app/billing_service.hpp"

namespace tally {
namespace {

Error IdReused(const std::string& id) {
    return Error{ErrorCode::kInvalidArgument,
                 "transfer id '" + id + "' was used before with other parameters; a transfer id is used once", "id",
                 ErrorReason::kIdempotencyKeyReused};
}

std::string OptText(const std::optional<Timestamp>& t) { return t ? std::to_string(t->unix_seconds()) : "-"; }

}  // namespace

CreditService::CreditService(Store& store, const Clock& clock, CreditActionCosts actions, BillingService* billing)
    : store_(store), clock_(clock), actions_(std::move(actions)), billing_(billing) {}

Result<std::optional<CreditGrantRecord>> CreditService::DuePeriodGrant(StoreTx& tx, const CustomerRecord& customer,
                                                                       Timestamp now) {
    if (billing_ == nullptr) return std::optional<CreditGrantRecord>();
    TALLY_ASSIGN_OR_RETURN(CustomerView view, billing_->BuildView(tx, customer, now));
    const Plan* plan = view.decision.plan;
    if (!view.primary || plan == nullptr || plan->credits_monthly <= 0) return std::optional<CreditGrantRecord>();
    const SubscriptionRecord& sub = *view.primary;
    if (sub.status != SubscriptionStatus::kActive && sub.status != SubscriptionStatus::kTrialing) {
        return std::optional<CreditGrantRecord>();
    }
    if (sub.current_period_end <= sub.current_period_start || now >= sub.current_period_end) {
        return std::optional<CreditGrantRecord>();  // the renewal has not been heard of yet
    }
    const std::string transfer = "period:" + sub.id.str() + ":" + std::to_string(sub.current_period_start.unix_seconds());
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.credits().GetTransfer(transfer));
    if (existing) return std::optional<CreditGrantRecord>();
    int64_t months = 1;
    if (sub.interval.unit == BillingInterval::Unit::kMonth) months = sub.interval.count;
    if (sub.interval.unit == BillingInterval::Unit::kYear) months = 12 * sub.interval.count;
    const int64_t amount = std::min(plan->credits_monthly * months, kCreditAmountMax);
    return std::optional<CreditGrantRecord>(CreditGrantRecord{
        NewId("cgr_"), customer.id, GrantType::kSubscription, amount, amount,
        DefaultGrantPriority(GrantType::kSubscription), sub.current_period_end, transfer,
        "plan " + plan->id.str() + " period from " + FormatRfc3339(sub.current_period_start),
        sub.current_period_start});
}

Result<Timestamp> CreditService::SubscriptionNow(StoreTx& tx, const CustomerRecord& customer, Timestamp now) {
    if (billing_ == nullptr) return now;
    TALLY_ASSIGN_OR_RETURN(CustomerView view, billing_->BuildView(tx, customer, now));
    if (!view.primary) return now;
    return std::max(now, view.primary->current_period_start);
}

Result<CreditBalance> CreditService::BalanceIn(StoreTx& tx, const CustomerId& customer, Timestamp now,
                                               Timestamp subscription_now) {
    TALLY_ASSIGN_OR_RETURN(auto grants, tx.credits().ListGrants(customer));
    CreditBalance b;
    for (const auto& g : grants) {
        const CreditGrantState state{g.id, g.type, g.remaining, g.priority, g.expires_at, g.created};
        if (!GrantUsable(state, g.type == GrantType::kSubscription ? subscription_now : now)) continue;
        (g.type == GrantType::kSubscription ? b.subscription
         : g.type == GrantType::kBundle     ? b.bundle
                                            : b.promotional) += g.remaining;
    }
    return b;
}

Result<CreditGrantOutcome> CreditService::Grant(StoreTx& tx, const CreditGrantInput& in) {
    TALLY_TRY(ValidateTransferId(in.id));
    TALLY_TRY(ValidateCreditAmount(in.amount, "amount"));
    if (in.type == GrantType::kSubscription) {
        return InvalidArgument("subscription grants are issued from the plan each period; grant promotional or bundle",
                               "type");
    }
    const Timestamp now = clock_.Now();
    if (in.expires_at && *in.expires_at <= now) return InvalidArgument("expires_at must be in the future", "expires_at");
    const int priority = in.priority.value_or(DefaultGrantPriority(in.type));
    const std::string request = "grant customer=" + in.customer.str() + " type=" + GrantTypeName(in.type) +
                                " amount=" + std::to_string(in.amount) + " expires_at=" + OptText(in.expires_at) +
                                " priority=" + std::to_string(priority) + " reason=" + in.reason;
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.credits().GetTransfer(in.id));
    if (existing) {
        if (existing->request != request) return IdReused(in.id);
        TALLY_ASSIGN_OR_RETURN(auto grants, tx.credits().ListGrants(in.customer));
        for (auto& g : grants) {
            if (g.transfer_id == in.id) return CreditGrantOutcome{std::move(g), true};
        }
        return Internal("transfer " + in.id + " has no grant");
    }
    TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(in.customer));
    if (!customer) return NotFound("no such customer: '" + in.customer.str() + "'", "customer");
    CreditGrantRecord g{NewId("cgr_"), in.customer, in.type,  in.amount, in.amount,
                        priority,     in.expires_at, in.id, in.reason, now};
    TALLY_ASSIGN_OR_RETURN(const Timestamp sub_now, SubscriptionNow(tx, *customer, now));
    TALLY_ASSIGN_OR_RETURN(CreditBalance before, BalanceIn(tx, in.customer, now, sub_now));
    TALLY_TRY(tx.credits().InsertGrant(g));
    CreditBalance after = before;
    (g.type == GrantType::kBundle ? after.bundle : after.promotional) += g.amount;
    TALLY_TRY(tx.credits().InsertTransfer(CreditTransferRecord{in.id, in.customer, "grant", in.amount, "", "", request,
                                                               after.subscription, after.bundle, after.promotional, now,
                                                               in.actor}));
    TALLY_TRY(tx.credits().AppendEntry(CreditEntryRecord{0, in.id, g.id, in.amount, now}));
    TALLY_TRY(tx.audit().Append({0, in.customer, now, "credit_granted", "",
                                 std::to_string(in.amount) + " " + GrantTypeName(in.type), in.actor,
                                 "grant=" + g.id + " transfer=" + in.id}));
    return CreditGrantOutcome{std::move(g), false};
}

Result<CreditDeduction> CreditService::Deduct(StoreTx& tx, const CreditDeductInput& in) {
    TALLY_TRY(ValidateTransferId(in.id));
    if (in.amount.has_value() == !in.action.empty()) {
        return InvalidArgument("give either amount or action", in.amount ? "action" : "amount");
    }
    int64_t amount = 0;
    if (in.amount) {
        TALLY_TRY(ValidateCreditAmount(*in.amount, "amount"));
        amount = *in.amount;
    } else {
        auto it = actions_.find(in.action);
        if (it == actions_.end()) return NotFound("no such action: '" + in.action + "'", "action");
        amount = it->second;
    }
    const std::string request = "deduct customer=" + in.customer.str() + " amount=" + std::to_string(amount) +
                                " action=" + in.action + " metadata=" + in.metadata;
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.credits().GetTransfer(in.id));
    if (existing) {
        if (existing->request != request) return IdReused(in.id);
        CreditDeduction replay{*existing, {}, {existing->balance_subscription, existing->balance_bundle,
                                               existing->balance_promotional},
                               true};
        TALLY_ASSIGN_OR_RETURN(auto entries, tx.credits().ListEntries(in.id));
        for (const auto& e : entries) replay.breakdown.push_back(CreditDraw{e.grant_id, -e.amount});
        return replay;
    }
    TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(in.customer));
    if (!customer) return NotFound("no such customer: '" + in.customer.str() + "'", "customer");
    const Timestamp now = clock_.Now();
    // The period's subscription credits are issued on its first deduction, exactly once (its transfer id).
    TALLY_ASSIGN_OR_RETURN(auto due, DuePeriodGrant(tx, *customer, now));
    TALLY_ASSIGN_OR_RETURN(const Timestamp sub_now, SubscriptionNow(tx, *customer, now));
    if (due) {
        TALLY_ASSIGN_OR_RETURN(CreditBalance before, BalanceIn(tx, in.customer, now, sub_now));
        TALLY_TRY(tx.credits().InsertGrant(*due));
        TALLY_TRY(tx.credits().InsertTransfer(CreditTransferRecord{
            due->transfer_id, in.customer, "grant", due->amount, "", "", "period grant",
            before.subscription + due->amount, before.bundle, before.promotional, now, "plan"}));
        TALLY_TRY(tx.credits().AppendEntry(CreditEntryRecord{0, due->transfer_id, due->id, due->amount, now}));
        TALLY_TRY(tx.audit().Append({0, in.customer, now, "credit_granted", "",
                                     std::to_string(due->amount) + " subscription", "plan",
                                     "grant=" + due->id + " transfer=" + due->transfer_id}));
    }
    TALLY_ASSIGN_OR_RETURN(auto grants, tx.credits().ListGrants(in.customer));
    std::vector<CreditGrantState> states;
    states.reserve(grants.size());
    for (const auto& g : grants) {
        CreditGrantState state{g.id, g.type, g.remaining, g.priority, g.expires_at, g.created};
        if (g.type == GrantType::kSubscription && !GrantUsable(state, sub_now)) state.remaining = 0;  // a past period's
        states.push_back(state);
    }
    TALLY_ASSIGN_OR_RETURN(auto draws, PlanDeduction(states, amount, now));
    for (const auto& d : draws) {
        for (const auto& g : grants) {
            if (g.id != d.grant) continue;
            TALLY_TRY(tx.credits().SetGrantRemaining(g.id, g.remaining - d.amount));
            TALLY_TRY(tx.credits().AppendEntry(CreditEntryRecord{0, in.id, g.id, -d.amount, now}));
        }
    }
    TALLY_ASSIGN_OR_RETURN(CreditBalance after, BalanceIn(tx, in.customer, now, sub_now));
    CreditTransferRecord t{in.id, in.customer, "deduct", amount, in.action, in.metadata, request, after.subscription,
                           after.bundle, after.promotional, now, in.actor};
    TALLY_TRY(tx.credits().InsertTransfer(t));
    return CreditDeduction{std::move(t), std::move(draws), after, false};
}

Result<std::vector<std::string>> CreditService::Verify() {
    std::vector<std::string> problems;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto grants, tx.credits().AllGrants());
        TALLY_ASSIGN_OR_RETURN(auto transfers, tx.credits().AllTransfers());
        TALLY_ASSIGN_OR_RETURN(auto entries, tx.credits().AllEntries());
        std::map<std::string, const CreditGrantRecord*> grant_by_id;
        for (const auto& g : grants) grant_by_id[g.id] = &g;
        std::map<std::string, const CreditTransferRecord*> transfer_by_id;
        for (const auto& t : transfers) transfer_by_id[t.id] = &t;
        std::map<std::string, int64_t> grant_sum;
        std::map<std::string, std::vector<const CreditEntryRecord*>> by_transfer;
        for (const auto& e : entries) {
            auto g = grant_by_id.find(e.grant_id);
            auto t = transfer_by_id.find(e.transfer_id);
            if (g == grant_by_id.end()) problems.push_back("entry " + std::to_string(e.id) + ": unknown grant " + e.grant_id);
            if (t == transfer_by_id.end()) {
                problems.push_back("entry " + std::to_string(e.id) + ": unknown transfer " + e.transfer_id);
            }
            if (g != grant_by_id.end() && t != transfer_by_id.end() && g->second->customer_id != t->second->customer_id) {
                problems.push_back("entry " + std::to_string(e.id) + ": transfer " + e.transfer_id + " of " +
                                   t->second->customer_id.str() + " moves grant " + e.grant_id + " of " +
                                   g->second->customer_id.str());
            }
            grant_sum[e.grant_id] += e.amount;
            by_transfer[e.transfer_id].push_back(&e);
        }
        for (const auto& g : grants) {
            if (g.remaining < 0 || g.remaining > g.amount) {
                problems.push_back("grant " + g.id + ": remaining " + std::to_string(g.remaining) + " outside 0.." +
                                   std::to_string(g.amount));
            }
            if (grant_sum[g.id] != g.remaining) {
                problems.push_back("grant " + g.id + ": remaining " + std::to_string(g.remaining) +
                                   " but its entries sum to " + std::to_string(grant_sum[g.id]));
            }
        }
        for (const auto& t : transfers) {
            const auto& es = by_transfer[t.id];
            int64_t sum = 0;
            bool signs_ok = true;
            for (const auto* e : es) {
                sum += e->amount;
                signs_ok = signs_ok && (t.kind == "grant" ? e->amount > 0 : e->amount < 0);
            }
            if (t.kind == "grant" && (es.size() != 1 || sum != t.amount)) {
                problems.push_back("transfer " + t.id + ": a grant of " + std::to_string(t.amount) + " has " +
                                   std::to_string(es.size()) + " entries summing to " + std::to_string(sum));
            } else if (t.kind == "deduct" && (!signs_ok || sum != -t.amount)) {
                problems.push_back("transfer " + t.id + ": a deduction of " + std::to_string(t.amount) +
                                   " has entries summing to " + std::to_string(sum));
            }
        }
        return {};
    }));
    return problems;
}

Result<CreditBalance> CreditService::Balance(const CustomerId& customer) {
    std::optional<CreditBalance> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        const Timestamp now = clock_.Now();
        TALLY_ASSIGN_OR_RETURN(const Timestamp sub_now, SubscriptionNow(tx, *c, now));
        TALLY_ASSIGN_OR_RETURN(out, BalanceIn(tx, customer, now, sub_now));
        // Due this period and not issued yet (no deduction so far): counted as it will be.
        TALLY_ASSIGN_OR_RETURN(auto due, DuePeriodGrant(tx, *c, now));
        if (due) out->subscription += due->amount;
        return {};
    }));
    return *out;
}

Result<std::vector<CreditGrantRecord>> CreditService::Grants(const CustomerId& customer) {
    std::vector<CreditGrantRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        TALLY_ASSIGN_OR_RETURN(out, tx.credits().ListGrants(customer));
        return {};
    }));
    return out;
}

}  // namespace tally
