#include "app/credit_service.hpp"

#include <algorithm>
#include <map>

#include "app/billing_service.hpp"
#include "app/event_outbox.hpp"
#include "domain/usage.hpp"

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
    : store_(store), clock_(clock), actions_(std::move(actions)), billing_(billing),
      deductions_(std::make_unique<ItemWriteBatch<PendingDeduction, CreditService, &CreditService::DeductBatch>>(*this)) {}

CreditService::~CreditService() = default;

Result<std::optional<CustomerView>> CreditService::ViewOf(StoreTx& tx, const CustomerRecord& customer, Timestamp now) {
    if (billing_ == nullptr) return std::optional<CustomerView>();
    TALLY_ASSIGN_OR_RETURN(CustomerView view, billing_->BuildView(tx, customer, now));
    return std::optional<CustomerView>(std::move(view));
}

Result<std::optional<CreditGrantRecord>> CreditService::DuePeriodGrant(StoreTx& tx, const CustomerRecord& customer,
                                                                       const std::optional<CustomerView>& maybe_view,
                                                                       Timestamp now) {
    if (!maybe_view) return std::optional<CreditGrantRecord>();
    const CustomerView& view = *maybe_view;
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

Timestamp CreditService::SubscriptionNow(const std::optional<CustomerView>& view, Timestamp now) {
    if (!view || !view->primary) return now;
    return std::max(now, view->primary->current_period_start);
}

Result<CreditBalance> CreditService::BalanceIn(StoreTx& tx, const CustomerId& customer, const Clocks& at,
                                               int64_t* reserved) {
    TALLY_ASSIGN_OR_RETURN(auto grants, tx.credits().ListGrants(customer));
    if (reserved != nullptr) {
        *reserved = 0;
        TALLY_ASSIGN_OR_RETURN(auto holds, tx.credits().ListPendingReservations(customer));
        for (const auto& r : holds) {
            if (at.now < r.expires_at) {
                *reserved += r.amount;
                continue;
            }
            // Lapsed, not released yet: its credits are back where they came from.
            TALLY_ASSIGN_OR_RETURN(auto entries, tx.credits().ListEntries(r.id));
            for (const auto& e : entries) {
                for (auto& g : grants) {
                    if (g.id == e.grant_id) g.remaining -= e.amount;
                }
            }
        }
    }
    return BalanceOf(grants, at);
}

CreditBalance CreditService::BalanceOf(const std::vector<CreditGrantRecord>& grants, const Clocks& at) {
    CreditBalance b;
    for (const auto& g : grants) {
        const CreditGrantState state{g.id, g.type, g.remaining, g.priority, g.expires_at, g.created};
        if (!GrantUsable(state, g.type == GrantType::kSubscription ? at.subscription_now : at.now)) continue;
        (g.type == GrantType::kSubscription ? b.subscription
         : g.type == GrantType::kBundle     ? b.bundle
                                            : b.promotional) += g.remaining;
    }
    return b;
}

Result<CreditService::Clocks> CreditService::Settle(StoreTx& tx, const CustomerRecord& customer,
                                                    std::vector<CreditGrantRecord>* grants_out) {
    Clocks at{clock_.Now(), clock_.Now()};
    // The period's subscription credits are issued on its first write, exactly once (its transfer id).
    TALLY_ASSIGN_OR_RETURN(auto view, ViewOf(tx, customer, at.now));
    TALLY_ASSIGN_OR_RETURN(auto due, DuePeriodGrant(tx, customer, view, at.now));
    at.subscription_now = SubscriptionNow(view, at.now);
    // Lapsed holds first, so the balance the new grant's transfer records counts what they give back.
    TALLY_ASSIGN_OR_RETURN(auto holds, tx.credits().ListPendingReservations(customer.id));
    for (auto& r : holds) {
        if (at.now < r.expires_at) continue;
        TALLY_ASSIGN_OR_RETURN(auto released, SettleHold(tx, r, 0, "expired", "expiry", at));
        (void)released;
    }
    if (due) TALLY_TRY(IssuePlanGrant(tx, *due, at));
    TALLY_ASSIGN_OR_RETURN(auto grants, tx.credits().ListGrants(customer.id));
    for (auto& g : grants) {
        if (g.remaining == 0 || !g.expires_at) continue;
        const Timestamp judged = g.type == GrantType::kSubscription ? at.subscription_now : at.now;
        if (judged < *g.expires_at) continue;
        TALLY_TRY(Expire(tx, g, "lapsed", at));
        g.remaining = 0;
    }
    if (grants_out != nullptr) *grants_out = std::move(grants);
    return at;
}

Result<int> CreditService::SettleLapsed(int limit) {
    std::vector<CustomerId> due;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(due, tx.credits().ListCustomersWithLapsedCredits(clock_.Now(), limit));
        return {};
    }));
    int settled = 0;
    for (const CustomerId& id : due) {
        // As a write of the customer's would: queued behind (and on every node serialized with) its other writes.
        Status s = store_.WriteSerialized("credits:" + id.str(), [&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(id));
            if (!customer) return {};
            TALLY_ASSIGN_OR_RETURN(auto at, Settle(tx, *customer));
            (void)at;
            return {};
        });
        if (!s.ok()) {
            // The store is failing: the next sweep goes on. One customer's own failure does not stop the others.
            if (s.error().code == ErrorCode::kUnavailable) return s.error();
            continue;
        }
        ++settled;
    }
    return settled;
}

EventOutbox* CreditService::outbox() const { return billing_ != nullptr ? billing_->outbox() : nullptr; }

Status CreditService::IssuePlanGrant(StoreTx& tx, const CreditGrantRecord& g, const Clocks& at) {
    TALLY_ASSIGN_OR_RETURN(CreditBalance before, BalanceIn(tx, g.customer_id, at));
    TALLY_TRY(tx.credits().InsertGrant(g));
    TALLY_TRY(tx.credits().InsertTransfer(CreditTransferRecord{
        g.transfer_id, g.customer_id, "grant", g.amount, "", "", "plan grant", before.subscription + g.amount,
        before.bundle, before.promotional, at.now, "plan", ""}));
    TALLY_TRY(tx.credits().AppendEntry(CreditEntryRecord{0, g.transfer_id, g.id, g.amount, at.now}));
    TALLY_TRY(tx.audit().Append({0, g.customer_id, at.now, "credit_granted", "", std::to_string(g.amount) + " subscription",
                                 "plan", "grant=" + g.id + " transfer=" + g.transfer_id}));
    EventOutbox* events = outbox();
    const std::string object = events != nullptr ? events->renderer().CreditGrant(g) : "{}";
    if (events != nullptr) TALLY_TRY(events->Emit(tx, "credits.granted", g.id, g.customer_id.str(), object));
    const std::string until = g.expires_at ? " until " + FormatRfc3339(*g.expires_at) : "";
    return Notify(tx, g.customer_id, "credits.granted", std::to_string(g.amount) + " credits from your plan" + until,
                  object, at.now);
}

Status CreditService::Notify(StoreTx& tx, const CustomerId& customer, const std::string& kind, const std::string& message,
                             const std::string& object_json, Timestamp now) {
    TALLY_ASSIGN_OR_RETURN(auto muted, tx.credits().MutedNotificationKinds(customer));
    if (std::find(muted.begin(), muted.end(), kind) != muted.end()) return {};
    return tx.credits().InsertNotification(NotificationRecord{NewId("ntf_"), customer, kind, message, object_json, now, {}});
}

Result<std::vector<NotificationRecord>> CreditService::Notifications(const CustomerId& customer, bool include_dismissed,
                                                                     const std::optional<std::string>& starting_after,
                                                                     int limit) {
    std::vector<NotificationRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        if (starting_after) {
            TALLY_ASSIGN_OR_RETURN(auto n, tx.credits().GetNotification(*starting_after));
            if (!n || n->customer_id != customer) {
                return NotFound("no such notification: '" + *starting_after + "'", "starting_after");
            }
        }
        TALLY_ASSIGN_OR_RETURN(out, tx.credits().ListNotifications(customer, include_dismissed, starting_after, limit));
        return {};
    }));
    return out;
}

Result<NotificationRecord> CreditService::DismissNotification(const CustomerId& customer, const std::string& id) {
    std::optional<NotificationRecord> out;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        TALLY_ASSIGN_OR_RETURN(out, tx.credits().GetNotification(id));
        if (!out || out->customer_id != customer) return NotFound("no such notification: '" + id + "'", "notification");
        if (out->dismissed_at) return {};
        out->dismissed_at = clock_.Now();
        return tx.credits().DismissNotification(id, *out->dismissed_at);
    }));
    return *out;
}

Result<std::vector<std::pair<std::string, bool>>> CreditService::NotificationPreferences(const CustomerId& customer) {
    std::vector<std::pair<std::string, bool>> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        TALLY_ASSIGN_OR_RETURN(auto muted, tx.credits().MutedNotificationKinds(customer));
        for (const auto& kind : kNotificationKinds) {
            out.emplace_back(kind, std::find(muted.begin(), muted.end(), kind) == muted.end());
        }
        return {};
    }));
    return out;
}

Result<std::vector<std::pair<std::string, bool>>> CreditService::SetNotificationPreferences(
    const CustomerId& customer, const std::vector<std::pair<std::string, bool>>& kinds, const std::string& actor) {
    for (const auto& [kind, keep] : kinds) {
        if (std::find(kNotificationKinds.begin(), kNotificationKinds.end(), kind) == kNotificationKinds.end()) {
            return InvalidArgument("unknown notification kind '" + kind + "'", "kinds." + kind);
        }
    }
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        std::string detail;
        for (const auto& [kind, keep] : kinds) {
            TALLY_TRY(tx.credits().SetNotificationKindMuted(customer, kind, !keep));
            detail += (detail.empty() ? "" : " ") + kind + "=" + (keep ? "on" : "off");
        }
        return tx.audit().Append({0, customer, clock_.Now(), "notification_preferences_set", "", "", actor, detail});
    }));
    return NotificationPreferences(customer);
}

Status CreditService::AnnounceThresholds(StoreTx& tx, const std::vector<CreditGrantRecord>& grants,
                                         const std::vector<CreditDraw>& draws, const Clocks& at) {
    EventOutbox* events = outbox();
    // The period's subscription credits: every subscription grant ending when the drawn one does (the period's
    // grant and an upgrade's).
    std::optional<Timestamp> period_end;
    int64_t taken = 0;
    for (const auto& d : draws) {
        for (const auto& g : grants) {
            if (g.id == d.grant && g.type == GrantType::kSubscription && g.expires_at) {
                period_end = g.expires_at;
                taken += d.amount;
            }
        }
    }
    if (!period_end) return {};
    int64_t allowance = 0;
    int64_t used_after = 0;
    const CreditGrantRecord* first = nullptr;
    for (const auto& g : grants) {
        if (g.type != GrantType::kSubscription || g.expires_at != period_end) continue;
        allowance += g.amount;
        used_after += g.amount - g.remaining;
        if (first == nullptr || g.created < first->created) first = &g;
    }
    const int64_t used_before = used_after - taken;
    const Period period{first->created, *period_end};
    for (int threshold : CrossedThresholds(used_before, used_after, allowance, kCreditThresholdPercents)) {
        // Once per threshold and period, however many deductions race past it (the mark is in their transaction).
        TALLY_ASSIGN_OR_RETURN(bool once, tx.usage().MarkThreshold(first->customer_id, kCreditThresholdMeter,
                                                                   period.start, threshold, at.now));
        if (!once) continue;
        const CreditThresholdCrossing crossing{first->customer_id, first->id, threshold, used_after, allowance,
                                               period};
        const std::string object = events != nullptr ? events->renderer().CreditThreshold(crossing) : "{}";
        if (events != nullptr) {
            TALLY_TRY(events->Emit(tx, "credits.threshold_reached", first->id, first->customer_id.str(), object));
        }
        TALLY_TRY(Notify(tx, first->customer_id, "credits.threshold_reached",
                         std::to_string(threshold) + "% of this period's " + std::to_string(allowance) +
                             " subscription credits used",
                         object, at.now));
    }
    return {};
}

Status CreditService::OnSubscriptionStored(StoreTx& tx, const CustomerId& customer_id,
                                           const std::optional<SubscriptionRecord>& before,
                                           const SubscriptionRecord& after) {
    if (billing_ == nullptr) return {};
    TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(customer_id));
    if (!customer) return {};
    TALLY_ASSIGN_OR_RETURN(const Clocks at, Settle(tx, *customer));
    // An upgrade within the same period: the difference of the allowances for the rest of it.
    if (!before || before->plan_id == after.plan_id || before->current_period_start != after.current_period_start ||
        (after.status != SubscriptionStatus::kActive && after.status != SubscriptionStatus::kTrialing)) {
        return {};
    }
    const Catalog& catalog = billing_->catalog();
    const Plan* from = catalog.FindPlan(PlanId(before->plan_id));
    const Plan* to = catalog.FindPlan(PlanId(after.plan_id));
    if (from == nullptr || to == nullptr) return {};
    const Period period{after.current_period_start, after.current_period_end};
    if (!period.Contains(at.subscription_now)) return {};
    int64_t months = 1;
    if (after.interval.unit == BillingInterval::Unit::kMonth) months = after.interval.count;
    if (after.interval.unit == BillingInterval::Unit::kYear) months = int64_t{12} * after.interval.count;
    TALLY_ASSIGN_OR_RETURN(const int64_t extra,
                           UpgradeCredits(std::min(from->credits_monthly * months, kCreditAmountMax),
                                          std::min(to->credits_monthly * months, kCreditAmountMax), period,
                                          at.subscription_now));
    if (extra <= 0) return {};
    const std::string transfer = "period:" + after.id.str() + ":" + std::to_string(period.start.unix_seconds()) +
                                 ":upgrade:" + after.plan_id;
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.credits().GetTransfer(transfer));
    if (existing) return {};
    return IssuePlanGrant(tx, CreditGrantRecord{NewId("cgr_"), customer_id, GrantType::kSubscription, extra, extra,
                                                DefaultGrantPriority(GrantType::kSubscription), period.end, transfer,
                                                "upgrade from " + before->plan_id + " to " + after.plan_id +
                                                    ", prorated from " + FormatRfc3339(at.subscription_now),
                                                at.now},
                          at);
}

Status CreditService::Expire(StoreTx& tx, const CreditGrantRecord& g, const std::string& cause, const Clocks& at) {
    const std::string id = "expire:" + g.id + ":" + cause;
    TALLY_TRY(tx.credits().SetGrantRemaining(g.id, 0));
    TALLY_TRY(tx.credits().AppendEntry(CreditEntryRecord{0, id, g.id, -g.remaining, at.now}));
    TALLY_ASSIGN_OR_RETURN(CreditBalance after, BalanceIn(tx, g.customer_id, at));
    TALLY_TRY(tx.credits().InsertTransfer(CreditTransferRecord{id, g.customer_id, "expire", g.remaining, "", "",
                                                               "expire", after.subscription, after.bundle,
                                                               after.promotional, at.now, "expiry", g.id}));
    TALLY_TRY(tx.audit().Append({0, g.customer_id, at.now, "credit_expired", std::to_string(g.remaining), "0",
                                 "expiry", "grant=" + g.id + " transfer=" + id}));
    if (EventOutbox* events = outbox()) {
        CreditGrantRecord now_empty = g;
        now_empty.remaining = 0;
        TALLY_TRY(events->Emit(tx, "credits.expired", g.id, g.customer_id.str(), events->renderer().CreditGrant(now_empty),
                               {{"remaining", g.remaining}}));
    }
    return {};
}

Result<std::vector<CreditDraw>> CreditService::PlanTake(const std::vector<CreditGrantRecord>& grants, int64_t amount,
                                                        const Clocks& at) {
    std::vector<CreditGrantState> states;
    states.reserve(grants.size());
    for (const auto& g : grants) {
        CreditGrantState state{g.id, g.type, g.remaining, g.priority, g.expires_at, g.created};
        if (g.type == GrantType::kSubscription && !GrantUsable(state, at.subscription_now)) state.remaining = 0;
        states.push_back(state);
    }
    return PlanDeduction(states, amount, at.now);
}

void CreditService::ApplyDraws(std::vector<CreditGrantRecord>& grants, const std::vector<CreditDraw>& draws,
                               const std::string& transfer_id, Timestamp now, std::vector<CreditEntryRecord>& entries,
                               std::vector<bool>& touched) {
    for (const auto& d : draws) {
        for (size_t i = 0; i < grants.size(); ++i) {
            if (grants[i].id != d.grant) continue;
            grants[i].remaining -= d.amount;
            touched[i] = true;
            entries.push_back(CreditEntryRecord{0, transfer_id, grants[i].id, -d.amount, now});
        }
    }
}

Result<std::vector<CreditDraw>> CreditService::Take(StoreTx& tx, std::vector<CreditGrantRecord>& grants,
                                                    const std::string& transfer_id, int64_t amount,
                                                    const Clocks& at) {
    TALLY_ASSIGN_OR_RETURN(auto draws, PlanTake(grants, amount, at));
    std::vector<CreditEntryRecord> entries;
    std::vector<bool> touched(grants.size(), false);
    ApplyDraws(grants, draws, transfer_id, at.now, entries, touched);
    for (size_t i = 0; i < grants.size(); ++i) {
        if (touched[i]) TALLY_TRY(tx.credits().SetGrantRemaining(grants[i].id, grants[i].remaining));
    }
    TALLY_TRY(tx.credits().AppendEntries(entries));
    TALLY_TRY(AnnounceThresholds(tx, grants, draws, at));
    return draws;
}

Status CreditService::GiveBack(StoreTx& tx, const CustomerId& customer, const std::string& transfer_id,
                               const std::vector<CreditDraw>& back, const Clocks& at) {
    TALLY_ASSIGN_OR_RETURN(auto grants, tx.credits().ListGrants(customer));
    for (const auto& d : back) {
        for (auto& g : grants) {
            if (g.id != d.grant || d.amount == 0) continue;
            g.remaining += d.amount;
            TALLY_TRY(tx.credits().SetGrantRemaining(g.id, g.remaining));
            TALLY_TRY(tx.credits().AppendEntry(CreditEntryRecord{0, transfer_id, g.id, d.amount, at.now}));
            TALLY_TRY(TakeBackOwed(tx, g, d.amount, transfer_id, at));
            const Timestamp judged = g.type == GrantType::kSubscription ? at.subscription_now : at.now;
            if (g.expires_at && judged >= *g.expires_at && g.remaining > 0) {
                // Back in a grant that has expired since: expired again at once (issue 13).
                TALLY_TRY(Expire(tx, g, transfer_id, at));
                g.remaining = 0;
            }
        }
    }
    return {};
}

Status CreditService::TakeBackOwed(StoreTx& tx, CreditGrantRecord& g, int64_t returned, const std::string& transfer_id,
                                   const Clocks& at) {
    constexpr std::string_view kPurchase = "purchase:";
    if (!g.transfer_id.starts_with(kPurchase)) return {};
    TALLY_ASSIGN_OR_RETURN(auto p, tx.credits().GetPurchase(g.transfer_id.substr(kPurchase.size())));
    if (!p || p->credits_refund_spent == 0) return {};
    // Credits a refund was owed but found spent come back (a hold released, a deduction reversed): taken back now,
    // or the customer would keep credits whose money was refunded.
    const int64_t take = std::min({returned, p->credits_refund_spent, g.remaining});
    if (take == 0) return {};
    const std::string id = "refund:" + p->id + ":" + transfer_id;
    g.remaining -= take;
    TALLY_TRY(tx.credits().SetGrantRemaining(g.id, g.remaining));
    TALLY_TRY(tx.credits().AppendEntry(CreditEntryRecord{0, id, g.id, -take, at.now}));
    p->credits_refunded += take;
    p->credits_refund_spent -= take;
    p->updated = at.now;
    TALLY_TRY(tx.credits().UpdatePurchase(*p));
    TALLY_ASSIGN_OR_RETURN(CreditBalance after, BalanceIn(tx, g.customer_id, at));
    TALLY_TRY(tx.credits().InsertTransfer(CreditTransferRecord{id, g.customer_id, "refund", take, "", "",
                                                               "refund purchase=" + p->id + " owed", after.subscription,
                                                               after.bundle, after.promotional, at.now, "stripe", p->id}));
    return tx.audit().Append({0, g.customer_id, at.now, "credit_refunded", "", std::to_string(take), "stripe",
                              "purchase=" + p->id + " owed, returned by " + transfer_id});
}

Result<CreditGrantOutcome> CreditService::Grant(StoreTx& tx, const CreditGrantInput& in) {
    TALLY_TRY(ValidateTransferId(in.id));
    return IssueGrant(tx, in);
}

Result<CreditGrantOutcome> CreditService::IssueGrant(StoreTx& tx, const CreditGrantInput& in) {
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
    TALLY_ASSIGN_OR_RETURN(const Clocks at, Settle(tx, *customer));
    CreditGrantRecord g{NewId("cgr_"), in.customer, in.type,  in.amount, in.amount,
                        priority,     in.expires_at, in.id, in.reason, at.now};
    TALLY_ASSIGN_OR_RETURN(CreditBalance before, BalanceIn(tx, in.customer, at));
    TALLY_TRY(tx.credits().InsertGrant(g));
    CreditBalance after = before;
    (g.type == GrantType::kBundle ? after.bundle : after.promotional) += g.amount;
    TALLY_TRY(tx.credits().InsertTransfer(CreditTransferRecord{in.id, in.customer, "grant", in.amount, "", "", request,
                                                               after.subscription, after.bundle, after.promotional,
                                                               at.now, in.actor, ""}));
    TALLY_TRY(tx.credits().AppendEntry(CreditEntryRecord{0, in.id, g.id, in.amount, at.now}));
    TALLY_TRY(tx.audit().Append({0, in.customer, at.now, "credit_granted", "",
                                 std::to_string(in.amount) + " " + GrantTypeName(in.type), in.actor,
                                 "grant=" + g.id + " transfer=" + in.id}));
    if (EventOutbox* events = outbox()) {
        TALLY_TRY(events->Emit(tx, "credits.granted", g.id, in.customer.str(), events->renderer().CreditGrant(g)));
    }
    return CreditGrantOutcome{std::move(g), false};
}

Result<CreditGrantRecord> CreditService::GrantPurchase(StoreTx& tx, const CreditPurchaseRecord& p) {
    CreditGrantInput in;
    in.customer = p.customer_id;
    in.id = "purchase:" + p.id;
    in.type = GrantType::kBundle;
    in.amount = p.credits;
    if (p.expires_in_days) in.expires_at = Timestamp(clock_.Now().unix_seconds() + *p.expires_in_days * 86400);
    in.reason = "bundle " + p.bundle;
    in.actor = "purchase:" + p.id;
    // Once per purchase: its transfer id. A replay finds the grant whatever its expiry was computed as.
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.credits().GetTransfer(in.id));
    if (existing) {
        TALLY_ASSIGN_OR_RETURN(auto grants, tx.credits().ListGrants(p.customer_id));
        for (auto& g : grants) {
            if (g.transfer_id == in.id) return std::move(g);
        }
        return Internal("transfer " + in.id + " has no grant");
    }
    TALLY_ASSIGN_OR_RETURN(auto outcome, IssueGrant(tx, in));
    return std::move(outcome.grant);
}

Result<CreditRefundPlan> CreditService::TakeBackRefund(StoreTx& tx, CreditPurchaseRecord& p, int64_t refunded_total) {
    if (refunded_total <= p.amount_refunded) return CreditRefundPlan{};  // seen already (refunds only grow)
    TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(p.customer_id));
    if (!customer) return NotFound("no such customer: '" + p.customer_id.str() + "'", "customer");
    std::vector<CreditGrantRecord> grants;
    TALLY_ASSIGN_OR_RETURN(const Clocks at, Settle(tx, *customer, &grants));
    CreditGrantRecord* grant = nullptr;
    for (auto& g : grants) {
        if (g.id == p.grant_id) grant = &g;
    }
    if (grant == nullptr) return Internal("purchase " + p.id + " has no grant " + p.grant_id);
    TALLY_ASSIGN_OR_RETURN(CreditRefundPlan plan,
                           PlanRefund(p.credits, p.amount, std::min(refunded_total, p.amount),
                                      p.credits_refunded + p.credits_refund_spent, grant->remaining));
    const std::string id = "refund:" + p.id + ":" + std::to_string(refunded_total);
    if (plan.take > 0) {
        grant->remaining -= plan.take;
        TALLY_TRY(tx.credits().SetGrantRemaining(grant->id, grant->remaining));
        TALLY_TRY(tx.credits().AppendEntry(CreditEntryRecord{0, id, grant->id, -plan.take, at.now}));
        const CreditBalance after = BalanceOf(grants, at);
        TALLY_TRY(tx.credits().InsertTransfer(CreditTransferRecord{
            id, p.customer_id, "refund", plan.take, "", "", "refund purchase=" + p.id, after.subscription, after.bundle,
            after.promotional, at.now, "stripe", p.id}));
    }
    p.amount_refunded = std::min(refunded_total, p.amount);
    p.credits_refunded += plan.take;
    p.credits_refund_spent += plan.spent;
    p.updated = at.now;
    TALLY_TRY(tx.audit().Append({0, p.customer_id, at.now, "credit_refunded", "", std::to_string(plan.take),
                                 "stripe", "purchase=" + p.id + " refunded=" + std::to_string(p.amount_refunded) +
                                               " already_spent=" + std::to_string(plan.spent)}));
    return plan;
}

Result<CreditDeduction> CreditService::Deduct(StoreTx& tx, const CreditDeductInput& in) {
    PendingDeduction one;
    one.in = in;
    TALLY_TRY(DeductBatch(tx, {&one}));
    return std::move(*one.out);
}

Status CreditService::DeductBatch(StoreTx& tx, const std::vector<PendingDeduction*>& items) {
    // One customer's credits, read and settled at its first deduction of the batch, then moved in memory.
    struct Ledger {
        std::optional<Error> refused;  // no such customer, or its settling failed: each of its deductions gets this
        Clocks at{};
        std::vector<CreditGrantRecord> grants;
        std::vector<bool> touched;                // grants moved by the batch
        std::optional<CreditBalance> spent_to;    // the balance its last deduction left
    };
    std::map<std::string, Ledger> ledgers;
    std::map<std::string_view, const PendingDeduction*> fresh;  // transfer id -> the item of this batch writing it
    std::vector<CreditTransferRecord> transfers;
    std::vector<CreditEntryRecord> entries;
    const auto ledger_of = [&](const CustomerId& id) -> Result<Ledger*> {
        auto [it, added] = ledgers.try_emplace(id.str());
        Ledger& l = it->second;
        if (!added) return &l;
        TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(id));
        if (!customer) {
            l.refused = NotFound("no such customer: '" + id.str() + "'", "customer");
            return &l;
        }
        // Settling writes only what the customer's next write would (a period grant due, lapsed holds and grants);
        // its own failure is undone and refuses this customer's deductions, not the batch.
        TALLY_TRY(tx.Savepoint());
        auto at = Settle(tx, *customer, &l.grants);
        if (!at.ok()) {
            if (IsStoreFailure(at.error())) return at.error();
            TALLY_TRY(tx.RollbackToSavepoint());
            l.refused = at.error();
        } else {
            l.at = *at;
        }
        TALLY_TRY(tx.ReleaseSavepoint());
        l.touched.assign(l.grants.size(), false);
        return &l;
    };
    for (PendingDeduction* item : items) item->out.reset();
    for (PendingDeduction* item : items) {
        const CreditDeductInput& in = item->in;
        // Decided before anything is written for it: a refusal leaves nothing.
        const auto decide = [&]() -> Result<std::optional<CreditDeduction>> {
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
            std::string request = "deduct customer=" + in.customer.str() + " amount=" + std::to_string(amount) +
                                  " action=" + in.action + " metadata=" + in.metadata;
            // A replay answers as the first time, also of a deduction earlier in this batch.
            if (auto it = fresh.find(in.id); it != fresh.end()) {
                const CreditDeduction& first = **it->second->out;
                if (first.transfer.request != request) return IdReused(in.id);
                CreditDeduction replay = first;
                replay.replayed = true;
                return std::optional<CreditDeduction>(std::move(replay));
            }
            TALLY_ASSIGN_OR_RETURN(auto existing, tx.credits().GetTransfer(in.id));
            if (existing) {
                if (existing->request != request) return IdReused(in.id);
                CreditDeduction replay{*existing, {}, {existing->balance_subscription, existing->balance_bundle,
                                                       existing->balance_promotional},
                                       true};
                TALLY_ASSIGN_OR_RETURN(auto past, tx.credits().ListEntries(in.id));
                for (const auto& e : past) replay.breakdown.push_back(CreditDraw{e.grant_id, -e.amount});
                return std::optional<CreditDeduction>(std::move(replay));
            }
            TALLY_ASSIGN_OR_RETURN(Ledger * l, ledger_of(in.customer));
            if (l->refused) return *l->refused;
            TALLY_ASSIGN_OR_RETURN(auto draws, PlanTake(l->grants, amount, l->at));
            CreditTransferRecord t{in.id, in.customer, "deduct", amount, in.action, in.metadata, std::move(request),
                                   0, 0, 0, l->at.now, in.actor, ""};
            return std::optional<CreditDeduction>(CreditDeduction{std::move(t), std::move(draws), {}, false});
        };
        auto decided = decide();
        if (!decided.ok()) {
            if (IsStoreFailure(decided.error())) return decided.error();
            item->out = decided.error();
            continue;
        }
        CreditDeduction d = std::move(**decided);
        if (d.replayed) {
            item->out = std::move(d);
            continue;
        }
        // Decided: moved in memory now, written with the batch's others below.
        Ledger& l = ledgers.at(in.customer.str());
        ApplyDraws(l.grants, d.breakdown, in.id, l.at.now, entries, l.touched);
        TALLY_TRY(AnnounceThresholds(tx, l.grants, d.breakdown, l.at));
        d.balance = BalanceOf(l.grants, l.at);
        d.transfer.balance_subscription = d.balance.subscription;
        d.transfer.balance_bundle = d.balance.bundle;
        d.transfer.balance_promotional = d.balance.promotional;
        l.spent_to = d.balance;
        transfers.push_back(d.transfer);
        item->out = std::move(d);
        fresh.emplace(in.id, item);
    }
    for (const auto& [id, l] : ledgers) {
        for (size_t i = 0; i < l.grants.size(); ++i) {
            if (l.touched[i]) TALLY_TRY(tx.credits().SetGrantRemaining(l.grants[i].id, l.grants[i].remaining));
        }
    }
    TALLY_TRY(tx.credits().InsertTransfers(transfers));
    TALLY_TRY(tx.credits().AppendEntries(entries));
    if (spend_listener_) {
        for (const auto& [id, l] : ledgers) {
            if (l.spent_to) TALLY_TRY(spend_listener_(tx, CustomerId(id), *l.spent_to));
        }
    }
    return {};
}

Result<CreditReservationOutcome> CreditService::ReplayHold(StoreTx& tx, const std::string& transfer_id,
                                                           const CreditReservationRecord& r) {
    TALLY_ASSIGN_OR_RETURN(auto t, tx.credits().GetTransfer(transfer_id));
    if (!t) return Internal("reservation " + r.id + " has no transfer " + transfer_id);
    CreditReservationOutcome out{r, {}, {t->balance_subscription, t->balance_bundle, t->balance_promotional}, true};
    TALLY_ASSIGN_OR_RETURN(auto entries, tx.credits().ListEntries(transfer_id));
    for (const auto& e : entries) out.breakdown.push_back(CreditDraw{e.grant_id, e.amount < 0 ? -e.amount : e.amount});
    return out;
}

Result<CreditReservationOutcome> CreditService::Reserve(StoreTx& tx, const CreditReserveInput& in) {
    TALLY_TRY(ValidateTransferId(in.id));
    TALLY_TRY(ValidateCreditAmount(in.amount, "amount"));
    if (in.expires_in < 1 || in.expires_in > kCreditReservationExpiresInMax) {
        return InvalidArgument("expires_in must be between 1 and " + std::to_string(kCreditReservationExpiresInMax) +
                                   " seconds",
                               "expires_in");
    }
    const std::string request = "reserve customer=" + in.customer.str() + " amount=" + std::to_string(in.amount) +
                                " expires_in=" + std::to_string(in.expires_in) + " metadata=" + in.metadata;
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.credits().GetTransfer(in.id));
    if (existing) {
        if (existing->request != request) return IdReused(in.id);
        TALLY_ASSIGN_OR_RETURN(auto r, tx.credits().GetReservation(in.id));
        if (!r) return Internal("transfer " + in.id + " has no reservation");
        return ReplayHold(tx, in.id, *r);
    }
    TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(in.customer));
    if (!customer) return NotFound("no such customer: '" + in.customer.str() + "'", "customer");
    std::vector<CreditGrantRecord> grants;
    TALLY_ASSIGN_OR_RETURN(const Clocks at, Settle(tx, *customer, &grants));
    TALLY_ASSIGN_OR_RETURN(auto draws, Take(tx, grants, in.id, in.amount, at));
    const CreditBalance after = BalanceOf(grants, at);
    TALLY_TRY(tx.credits().InsertTransfer(CreditTransferRecord{in.id, in.customer, "reserve", in.amount, "",
                                                               in.metadata, request, after.subscription, after.bundle,
                                                               after.promotional, at.now, in.actor, ""}));
    CreditReservationRecord r{in.id,     in.customer, in.amount,     Timestamp(at.now.unix_seconds() + in.expires_in),
                              "pending", std::nullopt, std::nullopt, in.metadata,
                              at.now};
    TALLY_TRY(tx.credits().InsertReservation(r));
    if (spend_listener_) TALLY_TRY(spend_listener_(tx, in.customer, after));
    return CreditReservationOutcome{std::move(r), std::move(draws), after, false};
}

Result<CreditReservationOutcome> CreditService::SettleHold(StoreTx& tx, CreditReservationRecord r, int64_t keep,
                                                           const std::string& status, const std::string& actor,
                                                           const Clocks& at) {
    const bool capture = status == "captured";
    const std::string id = (capture ? "capture:" : "release:") + r.id;
    TALLY_ASSIGN_OR_RETURN(auto entries, tx.credits().ListEntries(r.id));
    std::vector<CreditDraw> held;
    held.reserve(entries.size());
    for (const auto& e : entries) held.push_back(CreditDraw{e.grant_id, -e.amount});
    TALLY_ASSIGN_OR_RETURN(auto back, PlanReturn(held, keep));
    TALLY_TRY(GiveBack(tx, r.customer_id, id, back, at));
    TALLY_ASSIGN_OR_RETURN(CreditBalance after, BalanceIn(tx, r.customer_id, at));
    TALLY_TRY(tx.credits().InsertTransfer(CreditTransferRecord{
        id, r.customer_id, capture ? "capture" : "release", capture ? keep : r.amount, "", "",
        (capture ? "capture amount=" + std::to_string(keep) : std::string("release")), after.subscription,
        after.bundle, after.promotional, at.now, actor, r.id}));
    r.status = status;
    if (capture) r.captured = keep;
    r.settled_at = at.now;
    TALLY_TRY(tx.credits().SettleReservation(r));
    return CreditReservationOutcome{std::move(r), std::move(back), after, false};
}

namespace {
Error Settled(const CreditReservationRecord& r) {
    return Error{ErrorCode::kConflict, "reservation " + r.id + " is " + r.status + "; it can be settled once", "id",
                 ErrorReason::kReservationSettled};
}
}  // namespace

Result<CreditReservationOutcome> CreditService::Capture(StoreTx& tx, const std::string& reservation_id,
                                                        int64_t amount, const std::string& actor) {
    TALLY_ASSIGN_OR_RETURN(auto r, tx.credits().GetReservation(reservation_id));
    if (!r) return NotFound("no such reservation: '" + reservation_id + "'", "id");
    TALLY_ASSIGN_OR_RETURN(auto done, tx.credits().GetTransfer("capture:" + r->id));
    if (done) {
        if (done->amount == amount) return ReplayHold(tx, done->id, *r);
        return Settled(*r);
    }
    if (r->status != "pending") return Settled(*r);
    TALLY_TRY(ValidateCreditAmount(amount, "amount"));
    if (amount > r->amount) {
        return InvalidArgument("amount " + std::to_string(amount) + " is more than the " + std::to_string(r->amount) +
                                   " credits held",
                               "amount");
    }
    TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(r->customer_id));
    if (!customer) return Internal("reservation " + r->id + " of an unknown customer");
    TALLY_ASSIGN_OR_RETURN(const Clocks at, Settle(tx, *customer));
    TALLY_ASSIGN_OR_RETURN(r, tx.credits().GetReservation(reservation_id));  // Settle may have released it
    if (r->status != "pending") return Settled(*r);
    return SettleHold(tx, *r, amount, "captured", actor, at);
}

Result<CreditReservationOutcome> CreditService::Release(StoreTx& tx, const std::string& reservation_id,
                                                        const std::string& actor) {
    TALLY_ASSIGN_OR_RETURN(auto r, tx.credits().GetReservation(reservation_id));
    if (!r) return NotFound("no such reservation: '" + reservation_id + "'", "id");
    if (r->status == "captured") return Settled(*r);
    if (r->status != "pending") return ReplayHold(tx, "release:" + r->id, *r);
    TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(r->customer_id));
    if (!customer) return Internal("reservation " + r->id + " of an unknown customer");
    TALLY_ASSIGN_OR_RETURN(const Clocks at, Settle(tx, *customer));
    TALLY_ASSIGN_OR_RETURN(r, tx.credits().GetReservation(reservation_id));
    if (r->status != "pending") return ReplayHold(tx, "release:" + r->id, *r);
    return SettleHold(tx, *r, 0, "released", actor, at);
}

Result<CreditReversal> CreditService::Reverse(StoreTx& tx, const std::string& transfer_id, const std::string& actor) {
    TALLY_ASSIGN_OR_RETURN(auto t, tx.credits().GetTransfer(transfer_id));
    if (!t) return NotFound("no such transfer: '" + transfer_id + "'", "id");
    if (t->kind != "deduct" && t->kind != "capture") {
        return Error{ErrorCode::kInvalidArgument,
                     "transfer " + t->id + " is a " + t->kind + "; only a deduction or a capture can be reversed", "id",
                     ErrorReason::kTransferNotReversible};
    }
    const std::string id = "reversal:" + t->id;
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.credits().GetTransfer(id));
    if (existing) {
        CreditReversal replay{*existing, {}, {existing->balance_subscription, existing->balance_bundle,
                                              existing->balance_promotional},
                              true};
        TALLY_ASSIGN_OR_RETURN(auto entries, tx.credits().ListEntries(id));
        for (const auto& e : entries) {
            if (e.amount > 0) replay.breakdown.push_back(CreditDraw{e.grant_id, e.amount});
        }
        return replay;
    }
    TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(t->customer_id));
    if (!customer) return Internal("transfer " + t->id + " of an unknown customer");
    TALLY_ASSIGN_OR_RETURN(const Clocks at, Settle(tx, *customer));
    // What the transfer spent, per grant: a deduction's entries; a capture's is its hold less what it gave back.
    std::vector<CreditDraw> spent;
    auto add = [&](const std::string& grant, int64_t amount) {
        for (auto& d : spent) {
            if (d.grant == grant) {
                d.amount += amount;
                return;
            }
        }
        spent.push_back(CreditDraw{grant, amount});
    };
    TALLY_ASSIGN_OR_RETURN(auto entries, tx.credits().ListEntries(t->kind == "capture" ? t->reference : t->id));
    for (const auto& e : entries) add(e.grant_id, -e.amount);
    if (t->kind == "capture") {
        TALLY_ASSIGN_OR_RETURN(auto returned, tx.credits().ListEntries(t->id));
        for (const auto& e : returned) add(e.grant_id, -e.amount);
    }
    std::erase_if(spent, [](const CreditDraw& d) { return d.amount <= 0; });
    TALLY_TRY(GiveBack(tx, t->customer_id, id, spent, at));
    TALLY_ASSIGN_OR_RETURN(CreditBalance after, BalanceIn(tx, t->customer_id, at));
    CreditTransferRecord r{id,           t->customer_id,   "reverse", t->amount,   "",     "", "reverse",
                           after.subscription, after.bundle, after.promotional, at.now, actor, t->id};
    TALLY_TRY(tx.credits().InsertTransfer(r));
    TALLY_TRY(tx.audit().Append({0, t->customer_id, at.now, "credit_reversed", std::to_string(t->amount), "",
                                 actor, "transfer=" + t->id}));
    return CreditReversal{std::move(r), std::move(spent), after, false};
}

Result<CustomerId> CreditService::TransferCustomer(const std::string& transfer_id) {
    std::optional<CustomerId> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto t, tx.credits().GetTransfer(transfer_id));
        if (!t) return NotFound("no such transfer: '" + transfer_id + "'", "id");
        out = t->customer_id;
        return {};
    }));
    return *out;
}

Result<CreditReservationRecord> CreditService::GetReservation(const std::string& reservation_id) {
    std::optional<CreditReservationRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, tx.credits().GetReservation(reservation_id));
        if (!out) return NotFound("no such reservation: '" + reservation_id + "'", "id");
        return {};
    }));
    // Past its expiry and not yet released by a write: it is over, whatever the row says.
    if (out->status == "pending" && clock_.Now() >= out->expires_at) out->status = "expired";
    return *out;
}

Result<CustomerId> CreditService::ReservationCustomer(const std::string& reservation_id) {
    TALLY_ASSIGN_OR_RETURN(auto r, GetReservation(reservation_id));
    return r.customer_id;
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
        TALLY_ASSIGN_OR_RETURN(auto reservations, tx.credits().AllReservations());
        std::map<std::string, const CreditReservationRecord*> reservation_by_id;
        for (const auto& r : reservations) reservation_by_id[r.id] = &r;
        auto entry_sum = [&](const std::string& id) {
            int64_t sum = 0;
            for (const auto* e : by_transfer[id]) sum += e->amount;
            return sum;
        };
        auto all_signed = [&](const std::string& id, bool positive) {
            bool ok = true;
            for (const auto* e : by_transfer[id]) ok = ok && (positive ? e->amount > 0 : e->amount < 0);
            return ok;
        };
        auto fail = [&](const CreditTransferRecord& t, const std::string& what) {
            problems.push_back("transfer " + t.id + ": " + what);
        };
        for (const auto& t : transfers) {
            const auto& es = by_transfer[t.id];
            const int64_t sum = entry_sum(t.id);
            const std::string amount = std::to_string(t.amount);
            if (t.kind == "grant") {
                if (es.size() != 1 || sum != t.amount) {
                    fail(t, "a grant of " + amount + " has " + std::to_string(es.size()) + " entries summing to " +
                                std::to_string(sum));
                }
            } else if (t.kind == "deduct" || t.kind == "reserve") {
                if (!all_signed(t.id, false) || sum != -t.amount) {
                    fail(t, "a " + t.kind + " of " + amount + " has entries summing to " + std::to_string(sum));
                }
                if (t.kind == "reserve" &&
                    (!reservation_by_id.contains(t.id) || reservation_by_id[t.id]->amount != t.amount)) {
                    fail(t, "a hold of " + amount + " without its reservation of that amount");
                }
            } else if (t.kind == "capture" || t.kind == "release") {
                auto r = reservation_by_id.find(t.reference);
                if (r == reservation_by_id.end()) {
                    fail(t, "settles unknown reservation " + t.reference);
                    continue;
                }
                const int64_t owed = t.kind == "capture" ? r->second->amount - t.amount : r->second->amount;
                if (!all_signed(t.id, true) || sum != owed) {
                    fail(t, "a " + t.kind + " of reservation " + t.reference + " gives back " + std::to_string(sum) +
                                " instead of " + std::to_string(owed));
                }
                const bool status_ok = t.kind == "capture" ? r->second->status == "captured" &&
                                                                 r->second->captured == t.amount
                                                           : r->second->status == "released" ||
                                                                 r->second->status == "expired";
                if (!status_ok) fail(t, "reservation " + t.reference + " is " + r->second->status);
            } else if (t.kind == "reverse") {
                auto original = transfer_by_id.find(t.reference);
                if (original == transfer_by_id.end() ||
                    (original->second->kind != "deduct" && original->second->kind != "capture") ||
                    t.id != "reversal:" + t.reference || original->second->amount != t.amount) {
                    fail(t, "reverses " + t.reference + ", which is not a deduction or capture of " + amount);
                } else if (!all_signed(t.id, true) || sum != t.amount) {
                    fail(t, "a reversal of " + amount + " gives back " + std::to_string(sum));
                }
            } else if (t.kind == "refund") {
                if (es.size() != 1 || sum != -t.amount || t.amount <= 0 || t.id.rfind("refund:" + t.reference + ":", 0) != 0) {
                    fail(t, "a refund of " + amount + " for purchase " + t.reference + " has " +
                                std::to_string(es.size()) + " entries summing to " + std::to_string(sum));
                }
            } else if (t.kind == "expire") {
                if (es.size() != 1 || sum != -t.amount || es[0]->grant_id != t.reference) {
                    fail(t, "an expiry of " + amount + " of grant " + t.reference + " has entries summing to " +
                                std::to_string(sum));
                }
            } else {
                fail(t, "unknown kind " + t.kind);
            }
        }
        // A purchase is paid exactly when its grant exists; what its refunds took back is their transfers' sum, from
        // that grant, and never more than the bundle.
        TALLY_ASSIGN_OR_RETURN(auto purchases, tx.credits().AllPurchases());
        std::map<std::string, int64_t> refunded_by_purchase;
        for (const auto& t : transfers) {
            if (t.kind != "refund") continue;
            refunded_by_purchase[t.reference] += t.amount;
            for (const auto* e : by_transfer[t.id]) {
                const auto p = std::find_if(purchases.begin(), purchases.end(),
                                            [&](const CreditPurchaseRecord& x) { return x.id == t.reference; });
                if (p == purchases.end() || e->grant_id != p->grant_id) {
                    fail(t, "takes back from grant " + e->grant_id + ", not purchase " + t.reference + "'s");
                }
            }
        }
        for (const auto& p : purchases) {
            auto granted = transfer_by_id.find("purchase:" + p.id);
            const bool paid = p.status == "succeeded";
            if (paid != (granted != transfer_by_id.end())) {
                problems.push_back("purchase " + p.id + ": " + p.status + " but " + (paid ? "no" : "a") +
                                   " grant transfer");
            }
            if (granted != transfer_by_id.end() && granted->second->amount != p.credits) {
                problems.push_back("purchase " + p.id + ": " + std::to_string(p.credits) + " credits but granted " +
                                   std::to_string(granted->second->amount));
            }
            if (refunded_by_purchase[p.id] != p.credits_refunded) {
                problems.push_back("purchase " + p.id + ": credits_refunded " + std::to_string(p.credits_refunded) +
                                   " but its refund transfers took " + std::to_string(refunded_by_purchase[p.id]));
            }
            if (p.credits_refunded + p.credits_refund_spent > p.credits) {
                problems.push_back("purchase " + p.id + ": more refunded than bought");
            }
        }
        for (const auto& r : reservations) {
            if (!transfer_by_id.contains(r.id)) problems.push_back("reservation " + r.id + ": no hold transfer");
            const bool captured = transfer_by_id.contains("capture:" + r.id);
            const bool released = transfer_by_id.contains("release:" + r.id);
            const bool settled = r.status != "pending";
            if (captured && released) problems.push_back("reservation " + r.id + ": both captured and released");
            if (settled != (captured || released)) {
                problems.push_back("reservation " + r.id + ": " + r.status + " but " +
                                   (settled ? "never settled" : "settled") + " in the ledger");
            }
        }
        return {};
    }));
    return problems;
}

Result<CreditBalance> CreditService::Balance(const CustomerId& customer) {
    TALLY_ASSIGN_OR_RETURN(CreditSummary summary, Summary(customer));
    return summary.balance;
}

Result<CreditSummary> CreditService::Summary(const CustomerId& customer) {
    std::optional<CreditSummary> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        CreditSummary s;
        Clocks at{clock_.Now(), clock_.Now()};
        TALLY_ASSIGN_OR_RETURN(auto maybe_view, ViewOf(tx, *c, at.now));
        at.subscription_now = SubscriptionNow(maybe_view, at.now);
        TALLY_ASSIGN_OR_RETURN(s.balance, BalanceIn(tx, customer, at, &s.reserved));
        // Due this period and not issued yet (no write so far): counted as it will be.
        TALLY_ASSIGN_OR_RETURN(auto due, DuePeriodGrant(tx, *c, maybe_view, at.now));
        if (due) s.balance.subscription += due->amount;
        std::optional<BillingCycle> cycle;
        if (maybe_view) {
            const CustomerView& view = *maybe_view;
            if (view.decision.plan != nullptr) s.plan = view.decision.plan->id.str();
            if (view.primary && view.primary->current_period_end > view.primary->current_period_start) {
                cycle = BillingCycle{Period{view.primary->current_period_start, view.primary->current_period_end},
                                     view.primary->interval};
            }
            if (view.decision.plan != nullptr && view.decision.plan->credits_monthly > 0 && cycle) {
                s.next_reset_at = UsagePeriod(at.now, cycle).end;
            }
        }
        s.period = UsagePeriod(at.now, cycle);
        TALLY_ASSIGN_OR_RETURN(auto sums, tx.credits().SumTransfersSince(customer, s.period.start));
        for (const auto& [kind, amount] : sums) {
            if (kind == "deduct" || kind == "capture") s.used_this_period += amount;
            if (kind == "reverse") s.used_this_period -= amount;
        }
        s.used_this_period = std::max<int64_t>(s.used_this_period, 0);
        out = std::move(s);
        return {};
    }));
    return *out;
}

Result<std::vector<CreditTransferRecord>> CreditService::Transactions(const CreditTransferFilter& filter) {
    std::vector<CreditTransferRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(filter.customer));
        if (!c) return NotFound("no such customer: '" + filter.customer.str() + "'", "id");
        if (filter.starting_after) {
            TALLY_ASSIGN_OR_RETURN(auto t, tx.credits().GetTransfer(*filter.starting_after));
            if (!t || t->customer_id != filter.customer) {
                return NotFound("no such transaction: '" + *filter.starting_after + "'", "starting_after");
            }
        }
        TALLY_ASSIGN_OR_RETURN(out, tx.credits().ListTransfers(filter));
        return {};
    }));
    return out;
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
