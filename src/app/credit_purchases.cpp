#include "app/credit_purchases.hpp"

#include "app/billing_service.hpp"
#include "app/event_outbox.hpp"
#include "domain/usage.hpp"

namespace tally {
namespace {

Error IdReused(const std::string& id) {
    return Error{ErrorCode::kInvalidArgument,
                 "purchase id '" + id + "' was used before with another customer or bundle; a purchase id is used once",
                 "id", ErrorReason::kIdempotencyKeyReused};
}

Error Declined(const CreditPurchaseRecord& p) {
    return Error{ErrorCode::kPaymentRequired,
                 "the payment for purchase " + p.id + " failed: " +
                     (p.failure_message.empty() ? std::string("the card was declined") : p.failure_message),
                 "", ErrorReason::kCardDeclined};
}

std::string Key(const CustomerId& customer) { return "credits:" + customer.str(); }

}  // namespace

const CreditBundle* CreditPurchaseService::FindBundle(const std::string& id) const {
    for (const auto& b : bundles_) {
        if (b.id == id) return &b;
    }
    return nullptr;
}

Result<std::optional<CreditPurchaseRecord>> CreditPurchaseService::Prepare(const CreditPurchaseInput& in,
                                                                           const std::string& request) {
    TALLY_TRY(ValidateTransferId(in.id));
    if (FindBundle(in.bundle) == nullptr) return NotFound("no such bundle: '" + in.bundle + "'", "bundle");
    std::optional<CreditPurchaseRecord> existing;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(existing, tx.credits().GetPurchase(in.id));
        TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(in.customer));
        if (!customer) return NotFound("no such customer: '" + in.customer.str() + "'", "customer");
        return {};
    }));
    if (existing && existing->request != request) return IdReused(in.id);
    return existing;
}

Result<CreditPurchaseRecord> CreditPurchaseService::Record(const CreditPurchaseRecord& p) {
    CreditPurchaseRecord recorded = p;
    TALLY_TRY(store_.WriteSerialized(Key(p.customer_id), [&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto twin, tx.credits().GetPurchase(p.id));
        if (twin) {
            if (twin->request != p.request) return IdReused(p.id);
            recorded = *twin;
            return {};
        }
        TALLY_TRY(tx.credits().InsertPurchase(p));
        return tx.audit().Append({0, p.customer_id, p.created, "credit_purchase_started", "", p.bundle, p.actor,
                                  "purchase=" + p.id + " source=" + p.source + " amount=" + std::to_string(p.amount) +
                                      " " + p.currency});
    }));
    return recorded;
}

Result<CreditPurchaseOutcome> CreditPurchaseService::OutcomeOf(StoreTx& tx, const CreditPurchaseRecord& p,
                                                               bool replayed) {
    CreditPurchaseOutcome out{p, std::nullopt, replayed};
    if (p.grant_id.empty()) return out;
    TALLY_ASSIGN_OR_RETURN(auto grants, tx.credits().ListGrants(p.customer_id));
    for (auto& g : grants) {
        if (g.id == p.grant_id) out.grant = std::move(g);
    }
    return out;
}

Result<CreditPurchaseOutcome> CreditPurchaseService::Replay(const CreditPurchaseRecord& p) {
    std::optional<CreditPurchaseOutcome> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, OutcomeOf(tx, p, true));
        return {};
    }));
    return std::move(*out);
}

Status CreditPurchaseService::Emit(StoreTx& tx, const std::string& type, const CreditPurchaseRecord& p) {
    if (outbox_ == nullptr) return {};
    return outbox_->Emit(tx, type, p.id, p.customer_id.str(), outbox_->renderer().CreditPurchase(p));
}

Status CreditPurchaseService::Complete(StoreTx& tx, CreditPurchaseRecord& p, const std::string& payment_intent,
                                       const std::string& cause) {
    if (p.status == "succeeded") return {};
    // A payment that succeeded is honoured even after a failure was recorded: the money was taken.
    TALLY_ASSIGN_OR_RETURN(CreditGrantRecord grant, credits_.GrantPurchase(tx, p));
    const std::string before = p.status;
    p.status = "succeeded";
    if (!payment_intent.empty()) p.payment_intent = payment_intent;
    p.grant_id = grant.id;
    p.failure_code.clear();
    p.failure_message.clear();
    p.updated = clock_.Now();
    TALLY_TRY(tx.credits().UpdatePurchase(p));
    TALLY_TRY(tx.audit().Append({0, p.customer_id, p.updated, "credit_purchase_succeeded", before, p.status, cause,
                                 "purchase=" + p.id + " grant=" + grant.id + " payment_intent=" + p.payment_intent}));
    TALLY_TRY(Emit(tx, "credits.purchase_succeeded", p));
    if (p.source != "auto") return {};
    // However it was learned (the charge's answer or its webhook), the auto-purchase in flight is over.
    TALLY_ASSIGN_OR_RETURN(auto a, tx.credits().GetAutoPurchase(p.customer_id));
    if (!a || a->pending_purchase != p.id) return {};
    a->pending_purchase.clear();
    a->attempts = 0;
    a->failures = 0;
    a->next_attempt_at.reset();
    a->updated = p.updated;
    TALLY_TRY(tx.credits().UpsertAutoPurchase(*a));
    return EmitAuto(tx, "credits.auto_purchase_succeeded", *a, p,
                    "Bought " + std::to_string(p.credits) + " credits automatically (" + p.bundle + ")");
}

Result<int64_t> CreditPurchaseService::PurchasesThisMonth(StoreTx& tx, const CustomerId& customer) {
    const Period month = UsagePeriod(clock_.Now(), std::nullopt);
    return tx.credits().CountLivePurchasesSince(customer, "auto", month.start);
}

Status CreditPurchaseService::EmitAuto(StoreTx& tx, const std::string& type, const AutoPurchaseRecord& a,
                                       const CreditPurchaseRecord& p, const std::string& message) {
    TALLY_ASSIGN_OR_RETURN(int64_t month, PurchasesThisMonth(tx, a.customer_id));
    const std::string object = outbox_ != nullptr ? outbox_->renderer().AutoPurchase(a, month, &p) : "{}";
    if (outbox_ != nullptr) TALLY_TRY(outbox_->Emit(tx, type, p.id, a.customer_id.str(), object));
    return credits_.Notify(tx, a.customer_id, type, message, object, clock_.Now());
}

Result<CreditPurchaseRecord> CreditPurchaseService::StartAuto(StoreTx& tx, AutoPurchaseRecord& a,
                                                              const std::string& cause) {
    const CreditBundle* bundle = FindBundle(a.bundle);
    if (bundle == nullptr) return NotFound("no such bundle: '" + a.bundle + "' (no longer on sale)", "bundle");
    const Timestamp now = clock_.Now();
    const std::string id = NewId("cpur_auto_");
    CreditPurchaseRecord p{id, a.customer_id, bundle->id, bundle->credits, bundle->price.amount_minor(),
                           bundle->price.currency().code(), bundle->expires_in_days, "auto", "pending", "", "", "", "",
                           "", "", 0, 0, 0, "purchase customer=" + a.customer_id.str() + " bundle=" + bundle->id +
                           " source=auto", cause, now, now};
    TALLY_TRY(tx.credits().InsertPurchase(p));
    a.pending_purchase = id;
    a.attempts = 0;
    a.next_attempt_at = now;
    a.updated = now;
    TALLY_TRY(tx.credits().UpsertAutoPurchase(a));
    TALLY_TRY(tx.audit().Append({0, a.customer_id, now, "auto_purchase_started", "", bundle->id, cause,
                                 "purchase=" + id + " threshold=" + std::to_string(a.threshold)}));
    return p;
}

Status CreditPurchaseService::OnSpent(StoreTx& tx, const CustomerId& customer, const CreditBalance& after) {
    TALLY_ASSIGN_OR_RETURN(auto a, tx.credits().GetAutoPurchase(customer));
    if (!a || !a->enabled || a->paused || !a->pending_purchase.empty() || after.total() >= a->threshold) return {};
    TALLY_ASSIGN_OR_RETURN(int64_t month, PurchasesThisMonth(tx, customer));
    if (month >= a->max_per_month) return {};
    if (FindBundle(a->bundle) == nullptr) return {};  // a bundle no longer sold: nothing to buy (GET shows it)
    TALLY_ASSIGN_OR_RETURN(auto started, StartAuto(tx, *a, "threshold"));
    (void)started;
    if (wakeup_) wakeup_();
    return {};
}

Status CreditPurchaseService::RecordAutoFailure(StoreTx& tx, AutoPurchaseRecord& a, CreditPurchaseRecord& p,
                                                const std::string& code, const std::string& message) {
    const Timestamp now = clock_.Now();
    ++a.failures;
    ++a.attempts;
    a.updated = now;
    std::string note;
    if (a.failures >= kAutoPurchaseFailuresMax) {
        TALLY_TRY(Fail(tx, p, code, message, "auto_purchase"));
        a.enabled = false;
        a.disabled_reason = "disabled after " + std::to_string(a.failures) + " failed payments in a row; the last: " +
                            (message.empty() ? code : message);
        a.pending_purchase.clear();
        a.next_attempt_at.reset();
        note = "Automatic credit purchase failed " + std::to_string(a.failures) + " times and is now off: " + message;
    } else {
        TALLY_ASSIGN_OR_RETURN(int64_t delay, AutoPurchaseRetryDelay(a.failures));
        a.next_attempt_at = Timestamp(now.unix_seconds() + delay);
        p.failure_code = code;
        p.failure_message = message;
        p.updated = now;
        TALLY_TRY(tx.credits().UpdatePurchase(p));
        note = "Automatic credit purchase failed (" + message + "); retrying at " + FormatRfc3339(*a.next_attempt_at);
    }
    TALLY_TRY(tx.credits().UpsertAutoPurchase(a));
    TALLY_TRY(tx.audit().Append({0, a.customer_id, now, "auto_purchase_failed", "", a.enabled ? "retrying" : "disabled",
                                 "auto_purchase", "purchase=" + p.id + " failures=" + std::to_string(a.failures) +
                                                      " code=" + code}));
    return EmitAuto(tx, "credits.auto_purchase_failed", a, p, note);
}

Status CreditPurchaseService::Attempt(const AutoPurchaseRecord& claimed) {
    std::optional<CreditPurchaseRecord> p;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(p, tx.credits().GetPurchase(claimed.pending_purchase));
        return {};
    }));
    if (!p) return Internal("auto-purchase " + claimed.pending_purchase + " has no purchase");
    const auto settle = [&](const std::function<Status(StoreTx&, AutoPurchaseRecord&, CreditPurchaseRecord&)>& fn) {
        return store_.WriteSerialized(Key(claimed.customer_id), [&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(auto a, tx.credits().GetAutoPurchase(claimed.customer_id));
            TALLY_ASSIGN_OR_RETURN(auto current, tx.credits().GetPurchase(claimed.pending_purchase));
            if (!a || !current || a->pending_purchase != current->id) return {};  // settled meanwhile (its webhook)
            // Another run of this same attempt (a node that took over, a forced run) recorded it already.
            if (a->attempts != claimed.attempts) return {};
            if (current->status != "pending") {
                // Paid or failed through another path without clearing the settings: clear them now.
                a->pending_purchase.clear();
                a->next_attempt_at.reset();
                return tx.credits().UpsertAutoPurchase(*a);
            }
            return fn(tx, *a, *current);
        });
    };
    if (p->status != "pending") {
        return settle([](StoreTx&, AutoPurchaseRecord&, CreditPurchaseRecord&) -> Status { return {}; });
    }
    auto stripe_customer = checkout_.EnsureStripeCustomer(p->customer_id);
    Result<std::string> payment_method =
        stripe_customer.ok() ? stripe_.OffSessionPaymentMethod(*stripe_customer) : Result<std::string>(stripe_customer.error());
    Result<StripePaymentData> intent = Internal("not charged");
    if (payment_method.ok() && payment_method->empty()) {
        intent = Error{ErrorCode::kPaymentRequired, "the customer has no saved payment method", "",
                       ErrorReason::kPaymentMethodRequired};
    } else if (payment_method.ok()) {
        StripePaymentIntentCreate charge;
        charge.customer = *stripe_customer;
        charge.amount_minor = p->amount;
        charge.currency = p->currency;
        charge.payment_method = *payment_method;
        charge.description = "Automatic purchase: " + p->bundle;
        charge.metadata = {{"tally_purchase", p->id}, {"tally_customer_id", p->customer_id.str()}};
        // One key per attempt: a retry after a decline is a new charge; a node that takes over a claimed attempt
        // (the first died mid-charge) gets Stripe's first answer.
        charge.idempotency_key = "tally_purchase_" + p->id + "_" + std::to_string(claimed.attempts);
        // A charge left processing is looked at, never created again (Stripe forgets a key after 24 hours).
        intent = p->payment_intent.empty() ? stripe_.CreatePaymentIntent(charge)
                                           : stripe_.RetrievePaymentIntent(p->payment_intent);
    } else {
        intent = payment_method.error();
    }
    if (!intent.ok() && intent.error().code == ErrorCode::kUnavailable) {
        return settle([&](StoreTx& tx, AutoPurchaseRecord& a, CreditPurchaseRecord&) -> Status {
            a.next_attempt_at = Timestamp(clock_.Now().unix_seconds() + kAutoPurchaseUnavailableRetrySeconds);
            return tx.credits().UpsertAutoPurchase(a);
        });
    }
    return settle([&](StoreTx& tx, AutoPurchaseRecord& a, CreditPurchaseRecord& current) -> Status {
        if (!intent.ok()) {
            // Declined, no card, or Stripe refusing the charge for good (a detached card, ...): a failure.
            const std::string code = intent.error().reason == ErrorReason::kPaymentMethodRequired ? "payment_method_required"
                                     : intent.error().code == ErrorCode::kPaymentRequired         ? "card_declined"
                                                                                                  : "payment_refused";
            return RecordAutoFailure(tx, a, current, code, intent.error().message);
        }
        if (intent->status == "succeeded") return Complete(tx, current, intent->id, "auto_purchase");
        if (intent->status == "requires_payment_method" || intent->status == "canceled") {
            current.payment_intent.clear();  // the next attempt charges anew, under its own key
            return RecordAutoFailure(tx, a, current, intent->failure_code.empty() ? "card_declined" : intent->failure_code,
                                     intent->failure_message);
        }
        // processing: its webhook settles it; looked at again after a lease.
        current.payment_intent = intent->id;
        current.updated = clock_.Now();
        TALLY_TRY(tx.credits().UpdatePurchase(current));
        a.next_attempt_at = Timestamp(clock_.Now().unix_seconds() + kAutoPurchaseLeaseSeconds);
        return tx.credits().UpsertAutoPurchase(a);
    });
}

Result<int> CreditPurchaseService::RunDueAutoPurchases() {
    constexpr int kBatch = 20;
    std::vector<AutoPurchaseRecord> due;
    const Timestamp now = clock_.Now();
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(due, tx.credits().ListDueAutoPurchases(now, kBatch));
        return {};
    }));
    int attempted = 0;
    Status first_error;
    for (const auto& a : due) {
        // Turned off or paused during a backoff: not charged (a forced purchase still is, by ForceAutoPurchase).
        if (!a.enabled || a.paused) continue;
        bool claimed = false;
        TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(claimed, tx.credits().ClaimAutoPurchase(
                                                a.customer_id, a.pending_purchase, *a.next_attempt_at,
                                                Timestamp(now.unix_seconds() + kAutoPurchaseLeaseSeconds)));
            return {};
        }));
        if (!claimed) continue;  // another node has it
        ++attempted;
        // One customer's trouble does not hold up the others; the first error is returned after the batch.
        if (Status s = Attempt(a); !s.ok() && first_error.ok()) first_error = s;
    }
    if (!first_error.ok()) return first_error.error();
    return attempted;
}

Result<AutoPurchaseState> CreditPurchaseService::GetAutoPurchase(const CustomerId& customer) {
    AutoPurchaseState out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        TALLY_ASSIGN_OR_RETURN(auto a, tx.credits().GetAutoPurchase(customer));
        out.settings = a.value_or(AutoPurchaseRecord{customer, false, false, 0, "", kAutoPurchaseMaxPerMonthDefault,
                                                     0, "", "", 0, std::nullopt, c->created_at, ""});
        TALLY_ASSIGN_OR_RETURN(out.purchases_this_month, PurchasesThisMonth(tx, customer));
        return {};
    }));
    return out;
}

Result<AutoPurchaseState> CreditPurchaseService::SetAutoPurchase(const CustomerId& customer,
                                                                 const AutoPurchaseInput& in) {
    if (in.bundle && FindBundle(*in.bundle) == nullptr) return NotFound("no such bundle: '" + *in.bundle + "'", "bundle");
    if (in.threshold && (*in.threshold < 0 || *in.threshold > kCreditAmountMax)) {
        return InvalidArgument("threshold must be an integer between 0 and 2^53", "threshold");
    }
    if (in.max_per_month && (*in.max_per_month < 1 || *in.max_per_month > kAutoPurchaseMaxPerMonthMax)) {
        return InvalidArgument("max_per_month must be between 1 and " + std::to_string(kAutoPurchaseMaxPerMonthMax),
                               "max_per_month");
    }
    AutoPurchaseState out;
    TALLY_TRY(store_.WriteSerialized(Key(customer), [&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        TALLY_ASSIGN_OR_RETURN(auto existing, tx.credits().GetAutoPurchase(customer));
        if (!existing && !in.threshold) return MissingArgument("threshold is required the first time", "threshold");
        if (!existing && !in.bundle) return MissingArgument("bundle is required the first time", "bundle");
        AutoPurchaseRecord a = existing.value_or(AutoPurchaseRecord{customer, true, false, 0, "",
                                                                    kAutoPurchaseMaxPerMonthDefault, 0, "", "", 0,
                                                                    std::nullopt, {}, ""});
        const std::string before = existing ? "enabled=" + std::string(a.enabled ? "true" : "false") +
                                                  " threshold=" + std::to_string(a.threshold) + " bundle=" + a.bundle
                                            : "";
        if (in.enabled) {
            if (*in.enabled && !a.enabled) {
                a.failures = 0;
                a.disabled_reason.clear();
            }
            a.enabled = *in.enabled;
        }
        if (in.paused) a.paused = *in.paused;
        if (in.threshold) a.threshold = *in.threshold;
        if (in.bundle) a.bundle = *in.bundle;
        if (in.max_per_month) a.max_per_month = *in.max_per_month;
        a.updated = clock_.Now();
        a.actor = in.actor;
        TALLY_TRY(tx.credits().UpsertAutoPurchase(a));
        TALLY_TRY(tx.audit().Append({0, customer, a.updated, "auto_purchase_updated", before,
                                     "enabled=" + std::string(a.enabled ? "true" : "false") + " paused=" +
                                         (a.paused ? "true" : "false") + " threshold=" + std::to_string(a.threshold) +
                                         " bundle=" + a.bundle + " max_per_month=" + std::to_string(a.max_per_month),
                                     in.actor, ""}));
        out.settings = a;
        TALLY_ASSIGN_OR_RETURN(out.purchases_this_month, PurchasesThisMonth(tx, customer));
        return {};
    }));
    return out;
}

Result<CreditPurchaseOutcome> CreditPurchaseService::ForceAutoPurchase(const CustomerId& customer,
                                                                       const std::string& actor) {
    std::optional<AutoPurchaseRecord> started;
    TALLY_TRY(store_.WriteSerialized(Key(customer), [&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        TALLY_ASSIGN_OR_RETURN(auto a, tx.credits().GetAutoPurchase(customer));
        if (!a) {
            return InvalidArgument("customer " + customer.str() + " has no auto-purchase: set one with POST "
                                   "/v1/customers/{id}/auto_purchase first", "customer");
        }
        if (a->pending_purchase.empty()) {
            TALLY_ASSIGN_OR_RETURN(int64_t month, PurchasesThisMonth(tx, customer));
            if (month >= a->max_per_month) {
                return Error{ErrorCode::kConflict,
                             std::to_string(month) + " auto-purchases this month already (max_per_month " +
                                 std::to_string(a->max_per_month) + ")",
                             "", ErrorReason::kAutoPurchaseLimitReached};
            }
            TALLY_ASSIGN_OR_RETURN(auto p, StartAuto(tx, *a, actor));
            (void)p;
        }
        started = *a;
        return {};
    }));
    // Charged now, as the worker would (claimed the same way, so a worker running at once does not charge twice).
    bool claimed = false;
    if (started->next_attempt_at) {
        TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(claimed, tx.credits().ClaimAutoPurchase(
                                                customer, started->pending_purchase, *started->next_attempt_at,
                                                Timestamp(clock_.Now().unix_seconds() + kAutoPurchaseLeaseSeconds)));
            return {};
        }));
    }
    if (claimed) TALLY_TRY(Attempt(*started));
    return Get(started->pending_purchase);
}


Status CreditPurchaseService::Fail(StoreTx& tx, CreditPurchaseRecord& p, const std::string& code,
                                   const std::string& message, const std::string& cause) {
    if (p.status != "pending") return {};
    p.status = "failed";
    p.failure_code = code.empty() ? "card_declined" : code;
    p.failure_message = message;
    p.updated = clock_.Now();
    TALLY_TRY(tx.credits().UpdatePurchase(p));
    TALLY_TRY(tx.audit().Append({0, p.customer_id, p.updated, "credit_purchase_failed", "pending", p.status, cause,
                                 "purchase=" + p.id + " code=" + p.failure_code}));
    return Emit(tx, "credits.purchase_failed", p);
}

Result<CreditPurchaseOutcome> CreditPurchaseService::Purchase(const CreditPurchaseInput& in) {
    const std::string request = "purchase customer=" + in.customer.str() + " bundle=" + in.bundle + " source=api";
    TALLY_ASSIGN_OR_RETURN(auto existing, Prepare(in, request));
    if (existing && existing->status == "failed") return Declined(*existing);
    if (existing && existing->status == "succeeded") {
        return Replay(*existing);
    }
    const CreditBundle& bundle = *FindBundle(in.bundle);
    std::optional<StripeCustomerId> linked;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(in.customer));
        if (c) linked = c->stripe_customer_id;
        return {};
    }));
    // Without a Stripe customer there is no saved card: answered before anything is written (in Stripe or here).
    TALLY_ASSIGN_OR_RETURN(std::string payment_method,
                           linked ? stripe_.OffSessionPaymentMethod(*linked) : Result<std::string>(std::string()));
    const StripeCustomerId stripe_customer = linked.value_or(StripeCustomerId(""));
    if (payment_method.empty()) {
        return Error{ErrorCode::kPaymentRequired,
                     "customer " + in.customer.str() + " has no saved payment method to charge off-session; buy "
                     "through POST /v1/credits/checkout_sessions instead",
                     "customer", ErrorReason::kPaymentMethodRequired};
    }
    CreditPurchaseRecord p;
    if (existing) {
        p = *existing;
    } else {
        const Timestamp now = clock_.Now();
        p = CreditPurchaseRecord{in.id, in.customer, bundle.id, bundle.credits, bundle.price.amount_minor(),
                                 bundle.price.currency().code(), bundle.expires_in_days, "api", "pending", "", "", "",
                                 "", "", "", 0, 0, 0, request, in.actor, now, now};
        TALLY_ASSIGN_OR_RETURN(p, Record(p));
    }
    StripePaymentIntentCreate charge;
    charge.customer = stripe_customer;
    charge.amount_minor = p.amount;
    charge.currency = p.currency;
    charge.payment_method = payment_method;
    charge.description = bundle.name;
    charge.metadata = {{"tally_purchase", p.id}, {"tally_customer_id", p.customer_id.str()}};
    // Derived from the purchase: a retry, a resumed pending purchase or a twin get Stripe's first answer. Once the
    // PaymentIntent is known (it was left processing) it is looked at, never created again: Stripe forgets a key
    // after 24 hours, and a new one would charge twice.
    charge.idempotency_key = "tally_purchase_" + p.id;
    auto intent = p.payment_intent.empty() ? stripe_.CreatePaymentIntent(charge)
                                           : stripe_.RetrievePaymentIntent(p.payment_intent);
    if (!intent.ok() && intent.error().code != ErrorCode::kPaymentRequired) return intent.error();
    std::optional<CreditPurchaseOutcome> out;
    TALLY_TRY(store_.WriteSerialized(Key(p.customer_id), [&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto current, tx.credits().GetPurchase(p.id));
        if (!current) return Internal("purchase " + p.id + " vanished");
        if (!intent.ok()) {
            TALLY_TRY(Fail(tx, *current, "card_declined", intent.error().message, "api:purchase"));
        } else if (intent->status == "requires_payment_method" || intent->status == "canceled") {
            TALLY_TRY(Fail(tx, *current, intent->failure_code, intent->failure_message, "api:purchase"));
        } else if (intent->status == "succeeded") {
            TALLY_TRY(Complete(tx, *current, intent->id, "api:purchase"));
        } else if (current->payment_intent.empty()) {
            // processing (or waiting on the customer): its webhook settles it.
            current->payment_intent = intent->id;
            current->updated = clock_.Now();
            TALLY_TRY(tx.credits().UpdatePurchase(*current));
        }
        TALLY_ASSIGN_OR_RETURN(out, OutcomeOf(tx, *current, false));
        return {};
    }));
    if (out->purchase.status == "failed") return Declined(out->purchase);
    return std::move(*out);
}

Result<CreditPurchaseOutcome> CreditPurchaseService::StartCheckout(const CreditPurchaseInput& given) {
    CreditPurchaseInput in = given;
    if (in.id.empty()) in.id = NewId("cpur_");
    const std::string request = "purchase customer=" + in.customer.str() + " bundle=" + in.bundle + " source=checkout";
    TALLY_ASSIGN_OR_RETURN(auto existing, Prepare(in, request));
    if (existing && (existing->status != "pending" || !existing->checkout_url.empty())) {
        return Replay(*existing);
    }
    TALLY_ASSIGN_OR_RETURN(auto urls, checkout_.ResolveRedirectUrls(in.success_url, in.cancel_url));
    const CreditBundle& bundle = *FindBundle(in.bundle);
    CreditPurchaseRecord p;
    if (existing) {
        p = *existing;
    } else {
        const Timestamp now = clock_.Now();
        p = CreditPurchaseRecord{in.id, in.customer, bundle.id, bundle.credits, bundle.price.amount_minor(),
                                 bundle.price.currency().code(), bundle.expires_in_days, "checkout", "pending", "", "",
                                 "", "", "", "", 0, 0, 0, request, in.actor, now, now};
        TALLY_ASSIGN_OR_RETURN(p, Record(p));
    }
    // Recorded first: whatever happens next, the session's payment finds its purchase by metadata.tally_purchase.
    TALLY_ASSIGN_OR_RETURN(HostedSession session,
                           checkout_.StartPaymentCheckout(
                               in.customer, CheckoutLineItem{bundle.name, p.amount, p.currency},
                               {{"tally_purchase", p.id}}, urls.first, urls.second, "tally_purchase_checkout_" + p.id));
    std::optional<CreditPurchaseOutcome> out;
    TALLY_TRY(store_.WriteSerialized(Key(p.customer_id), [&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto current, tx.credits().GetPurchase(p.id));
        if (!current) return Internal("purchase " + p.id + " vanished");
        if (current->checkout_session.empty()) {
            current->checkout_session = session.id;
            current->checkout_url = session.url;
            current->updated = clock_.Now();
            TALLY_TRY(tx.credits().UpdatePurchase(*current));
        }
        TALLY_ASSIGN_OR_RETURN(out, OutcomeOf(tx, *current, false));
        return {};
    }));
    return std::move(*out);
}

Result<CreditPurchaseOutcome> CreditPurchaseService::Get(const std::string& id) {
    std::optional<CreditPurchaseOutcome> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto p, tx.credits().GetPurchase(id));
        if (!p) return NotFound("no such credit purchase: '" + id + "'", "id");
        TALLY_ASSIGN_OR_RETURN(out, OutcomeOf(tx, *p, false));
        return {};
    }));
    return std::move(*out);
}

Result<std::vector<CreditPurchaseRecord>> CreditPurchaseService::List(const CustomerId& customer,
                                                                      const std::optional<std::string>& starting_after,
                                                                      int limit) {
    std::vector<CreditPurchaseRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
        if (!c) return NotFound("no such customer: '" + customer.str() + "'", "id");
        if (starting_after) {
            TALLY_ASSIGN_OR_RETURN(auto after, tx.credits().GetPurchase(*starting_after));
            if (!after || after->customer_id != customer) {
                return NotFound("no such credit purchase: '" + *starting_after + "'", "starting_after");
            }
        }
        TALLY_ASSIGN_OR_RETURN(out, tx.credits().ListPurchases(customer, starting_after, limit));
        return {};
    }));
    return out;
}

Status CreditPurchaseService::OnStripeEvent(StoreTx& tx, const DecodedEvent& event) {
    const std::string cause = "event:" + event.id.str();
    if (const auto* session = std::get_if<StripeCheckoutData>(&event.object)) {
        if (session->purchase.empty()) return {};
        if (event.type == "checkout.session.expired") {
            // The page was left unpaid until Stripe expired it (24 h by default, or an expire call): the purchase
            // will never be paid through it (stripe.com/docs/api/checkout/sessions/expire: only an open session
            // expires, and an expired one cannot complete). Still pending only; a paid one stays paid.
            TALLY_ASSIGN_OR_RETURN(auto p, tx.credits().GetPurchase(session->purchase));
            if (!p || p->source != "checkout") return {};
            return Fail(tx, *p, "checkout_expired", "The Checkout Session expired before it was paid.", cause);
        }
        if (event.type != "checkout.session.completed" || session->payment_status != "paid") return {};
        TALLY_ASSIGN_OR_RETURN(auto p, tx.credits().GetPurchase(session->purchase));
        if (!p) return {};
        return Complete(tx, *p, session->payment_intent, cause);
    }
    const auto* payment = std::get_if<StripePaymentData>(&event.object);
    if (payment == nullptr) return {};
    const bool succeeded = event.type == "payment_intent.succeeded";
    const bool failed = event.type == "payment_intent.payment_failed";
    const bool refunded = event.type == "charge.refunded";
    if (!succeeded && !failed && !refunded) return {};
    std::optional<CreditPurchaseRecord> p;
    if (!payment->purchase.empty()) {
        TALLY_ASSIGN_OR_RETURN(p, tx.credits().GetPurchase(payment->purchase));
    }
    if (!p && !payment->payment_intent.empty()) {
        TALLY_ASSIGN_OR_RETURN(p, tx.credits().FindPurchaseByPaymentIntent(payment->payment_intent));
    }
    if (!p) return {};
    if (payment->amount_minor != p->amount || payment->currency != p->currency) {
        return tx.audit().Append({0, p->customer_id, clock_.Now(), "credit_purchase_mismatch", "", "", cause,
                                  "purchase=" + p->id + " paid " + std::to_string(payment->amount_minor) + " " +
                                      payment->currency + " for " + std::to_string(p->amount) + " " + p->currency});
    }
    if (succeeded) return Complete(tx, *p, payment->payment_intent, cause);
    if (failed) {
        // On a Checkout page the customer may try another card in the same session: only an off-session charge
        // has failed for good.
        if (p->source == "checkout") return {};
        if (p->source == "auto") {
            // Only a charge that was left processing fails this way (a decline at once is the worker's to record):
            // it is the PaymentIntent stored on the purchase.
            if (p->status != "pending" || p->payment_intent.empty() || p->payment_intent != payment->payment_intent) {
                return {};
            }
            TALLY_ASSIGN_OR_RETURN(auto a, tx.credits().GetAutoPurchase(p->customer_id));
            if (!a || a->pending_purchase != p->id) return {};
            p->payment_intent.clear();  // the next attempt charges anew, under its own key
            return RecordAutoFailure(tx, *a, *p, payment->failure_code.empty() ? "card_declined" : payment->failure_code,
                                     payment->failure_message);
        }
        return Fail(tx, *p, payment->failure_code, payment->failure_message, cause);
    }
    return ApplyRefund(tx, *p, *payment, cause);
}

Status CreditPurchaseService::ApplyRefund(StoreTx& tx, CreditPurchaseRecord& p, const StripePaymentData& charge,
                                          const std::string& cause) {
    // The charge was paid, so the purchase was (its own webhook may not have come yet).
    if (charge.status == "succeeded") TALLY_TRY(Complete(tx, p, charge.payment_intent, cause));
    if (p.status != "succeeded") return {};
    const int64_t seen = p.amount_refunded;
    TALLY_ASSIGN_OR_RETURN(CreditRefundPlan plan, credits_.TakeBackRefund(tx, p, charge.amount_refunded_minor));
    (void)plan;
    if (p.amount_refunded == seen) return {};  // an older or repeated snapshot of the charge
    TALLY_TRY(tx.credits().UpdatePurchase(p));
    return Emit(tx, "credits.purchase_refunded", p);
}

Result<CreditPurchaseOutcome> CreditPurchaseService::Refund(const std::string& id, std::optional<int64_t> amount,
                                                            const std::string& key, const std::string& actor) {
    TALLY_ASSIGN_OR_RETURN(CreditPurchaseOutcome current, Get(id));
    const CreditPurchaseRecord& p = current.purchase;
    if (p.status != "succeeded" || p.payment_intent.empty()) {
        return InvalidArgument("purchase " + id + " is " + p.status + ": only a paid purchase can be refunded", "id");
    }
    const int64_t left = p.amount - p.amount_refunded;
    if (left == 0) return InvalidArgument("purchase " + id + " is refunded in full already", "id");
    if (amount && (*amount < 1 || *amount > left)) {
        return InvalidArgument("amount must be between 1 and the " + std::to_string(left) + " not refunded yet", "amount");
    }
    TALLY_ASSIGN_OR_RETURN(StripePaymentData charge,
                           stripe_.RefundPayment(p.payment_intent, amount.value_or(0),
                                                 key.empty() ? "" : "tally_refund_" + p.id + "_" + key));
    TALLY_TRY(store_.WriteSerialized(Key(p.customer_id), [&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto stored, tx.credits().GetPurchase(id));
        if (!stored) return Internal("purchase " + id + " vanished");
        TALLY_TRY(tx.audit().Append({0, stored->customer_id, clock_.Now(), "credit_purchase_refund_requested", "",
                                     std::to_string(charge.amount_refunded_minor), actor, "purchase=" + id}));
        return ApplyRefund(tx, *stored, charge, "api:refund");
    }));
    return Get(id);
}

}  // namespace tally
