#include "app/subscription_service.hpp"

#include <algorithm>

#include "domain/text.hpp"

namespace tally {

bool IsTrialEndBehavior(const std::string& behavior) {
    return behavior == "cancel" || behavior == "pause" || behavior == "create_invoice";
}

namespace {

bool IsLive(SubscriptionStatus s) { return !IsTerminal(s); }

Error NotChangeable(const SubscriptionRecord& s, const std::string& what) {
    return Error{ErrorCode::kConflict,
                 "subscription " + s.id.str() + " is " + SubscriptionStatusName(s.status) + ": it cannot " + what, "id",
                 ErrorReason::kSubscriptionNotChangeable};
}

Error NoSuchSubscription(const std::string& id) { return NotFound("no such subscription: '" + id + "'", "id"); }

/// Stripe's derived key for one operation, "" without a caller key (then the client generates one per call).
std::string KeyFor(const std::string& op, const std::string& stripe_key) {
    return stripe_key.empty() ? std::string() : "tally_" + op + "_" + stripe_key;
}

}  // namespace

Result<std::pair<std::string, const CatalogPrice*>> SubscriptionService::StripePrice(const PlanId& plan,
                                                                                      const std::string& interval) {
    const Catalog& catalog = billing_.catalog();
    TALLY_ASSIGN_OR_RETURN(const CatalogPrice* price, PaidPrice(catalog, plan, interval));
    TALLY_ASSIGN_OR_RETURN(std::string price_id, SalePriceId(catalog, plan, *price, stripe_));
    return std::make_pair(std::move(price_id), price);
}

Result<SubscriptionView> SubscriptionService::Load(const StripeSubscriptionId& id) {
    if (IsBlank(id.str())) return NoSuchSubscription(id.str());
    std::optional<SubscriptionView> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto s, tx.billing().GetSubscription(id));
        if (!s) return {};
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().FindByStripeId(s->customer));
        out = SubscriptionView{std::move(*s), c ? c->id.str() : std::string()};
        return {};
    }));
    if (!out) return NoSuchSubscription(id.str());
    return std::move(*out);
}

Result<SubscriptionView> SubscriptionService::Get(const StripeSubscriptionId& id) { return Load(id); }

Result<std::vector<SubscriptionView>> SubscriptionService::ListForCustomer(const CustomerId& customer) {
    std::optional<std::vector<SubscriptionView>> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return {};
        out.emplace();
        if (!c->stripe_customer_id) return {};
        TALLY_ASSIGN_OR_RETURN(auto subs, tx.billing().ListSubscriptionsByStripeCustomer(*c->stripe_customer_id));
        for (auto& s : subs) out->push_back(SubscriptionView{std::move(s), c->id.str()});
        return {};
    }));
    if (!out) return NotFound("no such customer: '" + customer.str() + "'", "id");
    return std::move(*out);
}

Result<SubscriptionPage> SubscriptionService::List(SubscriptionListFilter filter) {
    if (filter.status && !ParseSubscriptionStatus(*filter.status).ok()) {
        return InvalidArgument("status must be one of Stripe's subscription statuses (active, trialing, past_due, "
                               "canceled, unpaid, paused, incomplete, incomplete_expired)",
                               "status");
    }
    filter.limit = std::clamp(filter.limit, 1, kSubscriptionPageSizeMax);
    const int wanted = filter.limit;
    filter.limit = wanted + 1;  // one more tells whether there is a next page
    SubscriptionPage page;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        if (filter.starting_after) {
            TALLY_ASSIGN_OR_RETURN(auto after, tx.billing().GetSubscription(StripeSubscriptionId(*filter.starting_after)));
            if (!after) return NotFound("no such subscription: '" + *filter.starting_after + "'", "starting_after");
        }
        TALLY_ASSIGN_OR_RETURN(auto rows, tx.billing().ListSubscriptions(filter));
        page.has_more = static_cast<int>(rows.size()) > wanted;
        if (page.has_more) rows.resize(static_cast<size_t>(wanted));
        for (auto& s : rows) {
            TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().FindByStripeId(s.customer));
            page.data.push_back(SubscriptionView{std::move(s), c ? c->id.str() : std::string()});
        }
        return {};
    }));
    return page;
}

Result<SubscriptionView> SubscriptionService::Apply(const StripeSubscriptionData& data,
                                                    const std::optional<EventStamp>& read_before,
                                                    const std::string& cause) {
    std::optional<AppliedSubscription> applied;
    const std::string request_id = NewId("");
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(applied, processor_.ApplySubscriptionResponse(tx, data, read_before, request_id, cause,
                                                                             clock_.Now()));
        return {};
    }));
    // A webhook was applied between the caller's read and Stripe's answer (one from this very call, or from an
    // earlier step still arriving), so the answer was not stored. Read your writes anyway: read the stored stamp,
    // then Stripe's current state, which is at least as new as every event applied before that read, and store it
    // under the same compare-and-set. A few rounds at most; then the webhooks decide, as before.
    // The change itself is done in Stripe: a failing re-read only ends the rounds, it never fails the call.
    for (int round = 0; read_before && !applied->stored && round < kReadYourWritesRoundsMax; ++round) {
        auto current = Load(data.id);
        if (!current.ok()) break;
        auto latest = stripe_.RetrieveSubscription(data.id);
        if (!latest.ok()) break;
        std::optional<AppliedSubscription> reread;
        Status written = store_.Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(reread, processor_.ApplySubscriptionResponse(tx, *latest, current->subscription.stamp,
                                                                                request_id, cause, clock_.Now()));
            return {};
        });
        if (!written.ok() || !reread) break;
        applied = std::move(reread);
    }
    return SubscriptionView{std::move(applied->subscription), applied->customer.id.str()};
}

Result<SubscriptionView> SubscriptionService::Create(const SubscriptionCreateInput& input, const std::string& stripe_key) {
    if (IsBlank(input.customer.str())) return MissingArgument("customer is required", "customer");
    if (input.trial_period_days && (*input.trial_period_days < 1 || *input.trial_period_days > kTrialPeriodDaysMax)) {
        return InvalidArgument("trial_period_days must be between 1 and " + std::to_string(kTrialPeriodDaysMax) +
                                   " (leave it out for no trial)",
                               "trial_period_days");
    }
    if (!input.payment_method.empty() && input.payment_method.rfind("pm_", 0) != 0) {
        return InvalidArgument("payment_method must be a Stripe payment method id (pm_...)", "payment_method");
    }
    {
        // kNotFound before anything reaches Stripe, naming the request's parameter.
        auto customer = billing_.GetCustomer(input.customer);
        if (!customer) {
            Error e = customer.error();
            if (e.code == ErrorCode::kNotFound) e.param = "customer";
            return e;
        }
    }
    // Validate the plan before creating a Stripe customer for it.
    TALLY_TRY(PaidPrice(billing_.catalog(), input.plan, input.interval));
    TALLY_ASSIGN_OR_RETURN(StripeCustomerId stripe_customer, checkout_.EnsureStripeCustomer(input.customer));
    if (!input.trial_period_days && input.payment_method.empty()) {
        TALLY_ASSIGN_OR_RETURN(std::string pm, stripe_.DefaultPaymentMethod(stripe_customer));
        if (pm.empty()) {
            return Error{ErrorCode::kPaymentRequired,
                         "customer " + input.customer.str() + " has no payment method: start a trial "
                         "(trial_period_days), pass payment_method, or send the customer to Checkout "
                         "(POST /v1/checkout_sessions) to subscribe with a card",
                         "payment_method", ErrorReason::kPaymentMethodRequired};
        }
    }
    TALLY_ASSIGN_OR_RETURN(auto price, StripePrice(input.plan, input.interval));
    StripeSubscriptionCreate request;
    request.customer = stripe_customer;
    request.price_id = price.first;
    request.trial_period_days = input.trial_period_days;
    request.default_payment_method = input.payment_method;
    request.trial_missing_payment_method = config_.trial_missing_payment_method;
    request.metadata = {{"tally_customer_id", input.customer.str()}};
    request.idempotency_key = KeyFor("subscription", stripe_key);
    TALLY_ASSIGN_OR_RETURN(StripeSubscriptionData created, stripe_.CreateSubscription(request));
    return Apply(created, std::nullopt, "api:subscription_create");
}

Result<int64_t> SubscriptionService::ProrationDate(const SubscriptionRecord& s, std::optional<int64_t> requested) {
    const int64_t start = s.current_period_start.unix_seconds();
    const int64_t end = s.current_period_end.unix_seconds();
    if (requested) {
        if (*requested < start || *requested >= end) {
            return InvalidArgument("proration_date must be inside the current period [" + std::to_string(start) + ", " +
                                       std::to_string(end) + ")",
                                   "proration_date");
        }
        return *requested;
    }
    TALLY_ASSIGN_OR_RETURN(Timestamp now, stripe_.SubscriptionNow(s.id, clock_.Now()));
    return std::clamp(now.unix_seconds(), start, std::max(start, end - 1));
}

Result<SubscriptionService::PlanMove> SubscriptionService::PrepareMove(const StripeSubscriptionId& id,
                                                                       const PlanId& plan, const std::string& interval,
                                                                       std::optional<int64_t> proration_date) {
    TALLY_ASSIGN_OR_RETURN(SubscriptionView view, Load(id));
    const SubscriptionRecord& s = view.subscription;
    if (!IsLive(s.status)) return NotChangeable(s, "change plan");
    TALLY_ASSIGN_OR_RETURN(auto price, StripePrice(plan, interval));
    if (price.first == s.price_id) return InvalidArgument("the subscription is already on that price", "plan");
    TALLY_ASSIGN_OR_RETURN(int64_t date, ProrationDate(s, proration_date));
    return PlanMove{std::move(view), std::move(price), date};
}

Result<ChangePreview> SubscriptionService::PreviewChange(const StripeSubscriptionId& id, const PlanId& plan,
                                                         const std::string& interval,
                                                         std::optional<int64_t> proration_date) {
    TALLY_ASSIGN_OR_RETURN(PlanMove move, PrepareMove(id, plan, interval, proration_date));
    SubscriptionView& view = move.view;
    const SubscriptionRecord& s = view.subscription;
    const auto& price = move.price;
    const int64_t date = move.proration_date;
    TALLY_ASSIGN_OR_RETURN(StripeInvoicePreview invoice,
                           stripe_.PreviewSubscriptionChange(id, price.first, date, "always_invoice"));
    ChangePreview out;
    out.plan = plan.str();
    out.interval = interval;
    out.proration_date = date;
    out.currency = invoice.currency;
    out.amount_due_minor = invoice.amount_due_minor;
    for (auto& line : invoice.lines) {
        if (line.proration) out.lines.push_back(std::move(line));
    }
    out.next_invoice_total_minor = price.second->unit_amount.amount_minor() * s.quantity;
    // An interval change starts a new period at the change (Stripe resets the billing cycle anchor).
    if (price.second->interval == s.interval) {
        out.next_invoice_at = s.current_period_end;
    } else {
        TALLY_ASSIGN_OR_RETURN(out.next_invoice_at, NthBoundary(Timestamp(date), price.second->interval, 1));
    }
    out.subscription = std::move(view);
    return out;
}

Result<SubscriptionView> SubscriptionService::Change(const StripeSubscriptionId& id, const PlanId& plan,
                                                     const std::string& interval, std::optional<int64_t> proration_date,
                                                     const std::string& stripe_key) {
    TALLY_ASSIGN_OR_RETURN(PlanMove move, PrepareMove(id, plan, interval, proration_date));
    SubscriptionView& view = move.view;
    const SubscriptionRecord& s = view.subscription;
    const auto& price = move.price;
    const int64_t date = move.proration_date;
    TALLY_ASSIGN_OR_RETURN(view, DropPendingChange(view, stripe_key, "api:subscription_change"));
    StripeSubscriptionUpdate update;
    update.price_id = price.first;
    update.proration_date = date;
    update.proration_behavior = "always_invoice";
    update.idempotency_key = KeyFor("subscription_change", stripe_key);
    TALLY_ASSIGN_OR_RETURN(StripeSubscriptionData changed, stripe_.UpdateSubscription(id, update));
    return Apply(changed, s.stamp, "api:subscription_change");
}

Result<std::optional<SubscriptionScheduleRecord>> SubscriptionService::OpenSchedule(const StripeSubscriptionId& id) {
    std::optional<SubscriptionScheduleRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto schedules, tx.billing().ListSchedulesForSubscription(id));
        for (auto& schedule : schedules) {
            if (IsOpenScheduleStatus(schedule.status)) out = std::move(schedule);
        }
        return {};
    }));
    return out;
}

Result<SubscriptionView> SubscriptionService::ApplySchedule(const StripeScheduleData& data,
                                                            const std::optional<EventStamp>& read_before,
                                                            const std::vector<std::pair<std::string, std::string>>& known_prices,
                                                            const SubscriptionView& fallback, const std::string& cause) {
    std::optional<SubscriptionRecord> after;
    const std::string request_id = NewId("");
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(after, processor_.ApplyScheduleResponse(tx, data, read_before, known_prices, request_id,
                                                                       cause, clock_.Now()));
        return {};
    }));
    if (!after) return fallback;
    return SubscriptionView{std::move(*after), fallback.customer_id};
}

Result<SubscriptionView> SubscriptionService::DropPendingChange(const SubscriptionView& view,
                                                                const std::string& stripe_key,
                                                                const std::string& cause) {
    TALLY_ASSIGN_OR_RETURN(auto schedule, OpenSchedule(view.subscription.id));
    if (!schedule) return view;
    TALLY_ASSIGN_OR_RETURN(StripeScheduleData released,
                           stripe_.ReleaseSchedule(schedule->id, KeyFor("schedule_release", stripe_key)));
    return ApplySchedule(released, schedule->stamp, {}, view, cause);
}

Result<SubscriptionView> SubscriptionService::ChangeAtPeriodEnd(const StripeSubscriptionId& id, const PlanId& plan,
                                                                const std::string& interval,
                                                                const std::string& stripe_key) {
    TALLY_ASSIGN_OR_RETURN(SubscriptionView view, Load(id));
    const SubscriptionRecord& s = view.subscription;
    if (!IsLive(s.status) || s.status == SubscriptionStatus::kIncomplete) return NotChangeable(s, "change plan");
    if (s.cancel_at_period_end) {
        return Error{ErrorCode::kConflict,
                     "subscription " + s.id.str() + " cancels at its period end: resume it before scheduling a change",
                     "id", ErrorReason::kSubscriptionNotChangeable};
    }
    // During a trial a change now costs nothing (no proration), and a schedule's first phase would have to carry
    // the trial over (Stripe applies the phase as sent): change it now instead.
    if (s.status == SubscriptionStatus::kTrialing) {
        return Error{ErrorCode::kConflict,
                     "subscription " + s.id.str() + " is trialing: change its plan now (at: now), which costs nothing "
                     "during the trial",
                     "at", ErrorReason::kSubscriptionNotChangeable};
    }
    TALLY_ASSIGN_OR_RETURN(auto price, StripePrice(plan, interval));
    if (price.first == s.price_id) {
        if (!s.pending_change) return InvalidArgument("the subscription is already on that price", "plan");
        return DropPendingChange(view, stripe_key, "api:subscription_change");  // back to staying as it is
    }
    if (s.pending_change && s.pending_change->price_id == price.first) return view;  // already scheduled
    TALLY_ASSIGN_OR_RETURN(auto schedule, OpenSchedule(id));
    const SchedulePhase current{s.current_period_start, s.current_period_end, s.price_id, s.quantity};
    const SchedulePhase next{s.current_period_end, Timestamp(), price.first, s.quantity};
    TALLY_ASSIGN_OR_RETURN(StripeScheduleData scheduled,
                           stripe_.ScheduleSubscriptionChange(id, schedule ? schedule->id : std::string(), current, next,
                                                              KeyFor("schedule_change", stripe_key)));
    return ApplySchedule(scheduled, schedule ? std::optional<EventStamp>(schedule->stamp) : std::nullopt,
                         {{price.first, price.second->lookup_key}, {s.price_id, s.price_lookup_key}}, view,
                         "api:subscription_change");
}

Result<SubscriptionView> SubscriptionService::Cancel(const StripeSubscriptionId& id, bool at_period_end, bool prorate,
                                                     const std::string& stripe_key) {
    TALLY_ASSIGN_OR_RETURN(SubscriptionView view, Load(id));
    const SubscriptionRecord& s = view.subscription;
    if (!IsLive(s.status)) return NotChangeable(s, "be canceled");
    if (at_period_end && prorate) {
        return InvalidArgument("prorate applies to an immediate cancel only (at_period_end: false)", "prorate");
    }
    if (at_period_end) {
        if (s.cancel_at_period_end) return view;  // already pending: nothing to do, the same answer
        // Stripe refuses cancel_at_period_end on a subscription a schedule manages: let the schedule go first.
        TALLY_ASSIGN_OR_RETURN(view, DropPendingChange(view, stripe_key, "api:subscription_cancel"));
        StripeSubscriptionUpdate update;
        update.cancel_at_period_end = true;
        update.idempotency_key = KeyFor("subscription_cancel", stripe_key);
        TALLY_ASSIGN_OR_RETURN(StripeSubscriptionData changed, stripe_.UpdateSubscription(id, update));
        return Apply(changed, s.stamp, "api:subscription_cancel");
    }
    TALLY_ASSIGN_OR_RETURN(StripeSubscriptionData canceled,
                           stripe_.CancelSubscription(id, prorate, KeyFor("subscription_cancel_now", stripe_key)));
    return Apply(canceled, s.stamp, "api:subscription_cancel");
}

Result<SubscriptionView> SubscriptionService::Resume(const StripeSubscriptionId& id, const std::string& stripe_key) {
    TALLY_ASSIGN_OR_RETURN(SubscriptionView view, Load(id));
    const SubscriptionRecord& s = view.subscription;
    if (!IsLive(s.status)) return NotChangeable(s, "be resumed");
    if (!s.cancel_at_period_end) {
        return Error{ErrorCode::kConflict, "subscription " + s.id.str() + " has no pending cancel to undo", "id",
                     ErrorReason::kSubscriptionNotChangeable};
    }
    StripeSubscriptionUpdate update;
    update.cancel_at_period_end = false;
    update.idempotency_key = KeyFor("subscription_resume", stripe_key);
    TALLY_ASSIGN_OR_RETURN(StripeSubscriptionData changed, stripe_.UpdateSubscription(id, update));
    return Apply(changed, s.stamp, "api:subscription_resume");
}

Result<SubscriptionView> SubscriptionService::SetPauseCollection(const StripeSubscriptionId& id,
                                                                 const std::string& behavior,
                                                                 const std::string& stripe_key) {
    if (!behavior.empty() && behavior != "keep_as_draft" && behavior != "mark_uncollectible" && behavior != "void") {
        return InvalidArgument("behavior must be one of keep_as_draft, mark_uncollectible, void", "behavior");
    }
    TALLY_ASSIGN_OR_RETURN(SubscriptionView view, Load(id));
    const SubscriptionRecord& s = view.subscription;
    if (!IsLive(s.status)) return NotChangeable(s, behavior.empty() ? "be unpaused" : "be paused");
    if (behavior.empty() && s.pause_collection.empty()) {
        return Error{ErrorCode::kConflict, "subscription " + s.id.str() + " is not paused", "id",
                     ErrorReason::kSubscriptionNotChangeable};
    }
    StripeSubscriptionUpdate update;
    update.pause_collection = behavior;
    update.idempotency_key = KeyFor(behavior.empty() ? "subscription_unpause" : "subscription_pause", stripe_key);
    TALLY_ASSIGN_OR_RETURN(StripeSubscriptionData changed, stripe_.UpdateSubscription(id, update));
    return Apply(changed, s.stamp, behavior.empty() ? "api:subscription_unpause" : "api:subscription_pause");
}

}  // namespace tally
