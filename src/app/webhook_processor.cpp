#include "app/webhook_processor.hpp"

#include <chrono>

#include "app/event_outbox.hpp"
#include "app/thread_hooks.hpp"

namespace tally {

const char* InboxStatusName(InboxStatus status) {
    switch (status) {
        case InboxStatus::kPending: return "pending";
        case InboxStatus::kProcessed: return "processed";
        case InboxStatus::kFailed: return "failed";
    }
    return "pending";
}

Result<InboxStatus> ParseInboxStatus(const std::string& text) {
    if (text == "pending") return InboxStatus::kPending;
    if (text == "processed") return InboxStatus::kProcessed;
    if (text == "failed") return InboxStatus::kFailed;
    return InvalidArgument("status must be one of pending, processed, failed", "status");
}

int64_t WebhookRetryDelaySeconds(int attempts) {
    if (attempts < 1) return 0;
    if (attempts > 12) return kWebhookRetryDelaySecondsMax;
    return std::min<int64_t>(int64_t{1} << (attempts - 1), kWebhookRetryDelaySecondsMax);
}

WebhookProcessor::WebhookProcessor(Store& store, const EventDecoder& decoder, BillingService& billing,
                                   const Clock& clock, Metrics& metrics)
    : store_(store), decoder_(decoder), billing_(billing), clock_(clock), metrics_(metrics) {}

Result<std::string> WebhookProcessor::ProcessInTx(StoreTx& tx, const StripeEventId& id,
                                                  const Result<DecodedEvent>* decoded, Timestamp now,
                                                  std::vector<std::pair<std::string, int64_t>>& seen) {
    TALLY_ASSIGN_OR_RETURN(auto inbox, tx.inbox().Get(id));
    if (!inbox) return NotFound("no such event: '" + id.str() + "'", "id");
    if (inbox->status == InboxStatus::kProcessed) return std::string("already_processed");
    TALLY_TRY(tx.Savepoint());
    Result<std::string> outcome = std::string();
    std::optional<Result<DecodedEvent>> local;
    std::string payload;
    if (decoded == nullptr) {
        // Not decoded before the transaction (it was missing or processed then): read and decode it now.
        TALLY_ASSIGN_OR_RETURN(auto stored, tx.inbox().GetPayload(id));
        payload = stored.value_or("");
        decoded = &local.emplace(decoder_.Decode(payload));
    }
    if (decoded->ok()) {
        outcome = Apply(tx, **decoded, now);
    } else {
        outcome = decoded->error();
    }
    if (outcome.ok()) {
        TALLY_TRY(tx.ReleaseSavepoint());
        inbox->status = InboxStatus::kProcessed;
        inbox->attempts += 1;
        inbox->outcome = *outcome;
        inbox->last_error.clear();
        inbox->next_attempt_at.reset();
        inbox->processed_at = now;
        TALLY_TRY(tx.inbox().UpdateState(*inbox));
        seen.emplace_back(*outcome, now.unix_seconds() - inbox->received_at.unix_seconds());
        return outcome;
    }
    // Undo whatever the failed apply wrote, keep the rest of the batch, and record the failure.
    TALLY_TRY(tx.RollbackToSavepoint());
    TALLY_TRY(tx.ReleaseSavepoint());
    const Error& error = outcome.error();
    inbox->status = InboxStatus::kFailed;
    inbox->attempts += 1;
    inbox->last_error = std::string(ErrorCodeName(error.code)) + ": " + error.message +
                        (error.param.empty() ? "" : " (" + error.param + ")");
    if (inbox->attempts >= kWebhookAttemptCountMax) {
        inbox->next_attempt_at.reset();
    } else {
        inbox->next_attempt_at = now.PlusSeconds(WebhookRetryDelaySeconds(inbox->attempts));
    }
    TALLY_TRY(tx.inbox().UpdateState(*inbox));
    seen.emplace_back("failed", now.unix_seconds() - inbox->received_at.unix_seconds());
    return outcome;
}

Result<std::vector<Result<std::string>>> WebhookProcessor::ProcessBatch(const std::vector<StripeEventId>& ids) {
    const Timestamp now = clock_.Now();
    // Decode outside the write transaction: parsing is the CPU-heavy part and needs no lock. Events that
    // are already processed or missing are re-checked inside the transaction.
    std::vector<std::string> payloads(ids.size());  // outlive |decoded|, whose payload views point here
    std::vector<std::optional<Result<DecodedEvent>>> decoded(ids.size());
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        for (size_t i = 0; i < ids.size(); ++i) {
            TALLY_ASSIGN_OR_RETURN(auto inbox, tx.inbox().Get(ids[i]));
            if (!inbox || inbox->status == InboxStatus::kProcessed) continue;
            TALLY_ASSIGN_OR_RETURN(auto payload, tx.inbox().GetPayload(ids[i]));
            payloads[i] = payload.value_or("");
            decoded[i].emplace(decoder_.Decode(payloads[i]));
        }
        return {};
    }));
    return ApplyDecoded(ids, decoded, now);
}

Result<std::vector<Result<std::string>>> WebhookProcessor::ProcessRecorded(const std::vector<InboxEvent>& events) {
    const Timestamp now = clock_.Now();
    std::vector<StripeEventId> ids;
    std::vector<std::optional<Result<DecodedEvent>>> decoded(events.size());
    ids.reserve(events.size());
    for (size_t i = 0; i < events.size(); ++i) {
        ids.push_back(events[i].id);
        decoded[i].emplace(decoder_.Decode(events[i].payload));  // views into |events|, which outlive this call
    }
    return ApplyDecoded(ids, decoded, now);
}

Result<std::vector<Result<std::string>>> WebhookProcessor::ApplyDecoded(
    const std::vector<StripeEventId>& ids, std::vector<std::optional<Result<DecodedEvent>>>& decoded, Timestamp now) {
    std::vector<Result<std::string>> results;
    std::vector<std::pair<std::string, int64_t>> seen;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        results.clear();
        seen.clear();
        // With several nodes, each worker may pick the same due events: those another node is applying now are
        // left to it (it records their outcome) instead of applied twice.
        TALLY_ASSIGN_OR_RETURN(const auto mine, tx.inbox().LockForProcessing(ids));
        for (size_t i = 0; i < ids.size(); ++i) {
            if (!mine[i]) {
                results.emplace_back(std::string("processing_elsewhere"));
                continue;
            }
            Result<std::string> r = ProcessInTx(tx, ids[i], decoded[i] ? &*decoded[i] : nullptr, now, seen);
            // A store failure (not an event's own failure) aborts the whole transaction.
            if (!r.ok() && r.error().code == ErrorCode::kUnavailable) return r.error();
            results.push_back(std::move(r));
        }
        return {};
    }));
    for (const auto& [outcome, lag] : seen) metrics_.WebhookProcessed(outcome, lag);
    return results;
}

Result<std::string> WebhookProcessor::ProcessOne(const StripeEventId& id) {
    TALLY_ASSIGN_OR_RETURN(auto results, ProcessBatch({id}));
    return std::move(results.front());
}

Result<int> WebhookProcessor::ProcessDue() {
    std::vector<StripeEventId> ids;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(ids, tx.inbox().ListDue(clock_.Now(), kWebhookProcessBatchMax));
        return {};
    }));
    if (ids.empty()) return 0;
    TALLY_TRY(ProcessBatch(ids));  // per-event failures are recorded on the events themselves
    return static_cast<int>(ids.size());
}

Result<InboxEvent> WebhookProcessor::Retry(const StripeEventId& id) {
    std::optional<InboxEvent> out;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, tx.inbox().Get(id));
        if (!out) return NotFound("no such event: '" + id.str() + "'", "id");
        if (out->status == InboxStatus::kProcessed) {
            return Conflict("event '" + id.str() + "' is already processed", "id");
        }
        out->next_attempt_at = clock_.Now();
        return tx.inbox().UpdateState(*out);
    }));
    return std::move(*out);
}

Result<bool> WebhookProcessor::IsNewer(StoreTx& tx, const DecodedEvent& event, bool terminal, const EventStamp& stored) {
    const EventStamp incoming{event.created.unix_seconds(), EventTypeRank(event.type), event.id.str(), terminal};
    bool incoming_follows = false;
    bool stored_follows = false;
    bool received_later = false;
    if (incoming.created == stored.created && incoming.event_id != stored.event_id) {
        // Same second: look for chain evidence between this event and the stored snapshot's own event.
        TALLY_ASSIGN_OR_RETURN(auto stored_payload, tx.inbox().GetPayload(StripeEventId(stored.event_id)));
        if (stored_payload) {
            if (auto evidence = decoder_.ChainEvidence(event.payload, *stored_payload); evidence.ok()) {
                incoming_follows = evidence->first;
                stored_follows = evidence->second;
            }
        }
        if (incoming_follows && stored_follows) {
            // Mirror images (a change and its reversal): only the arrival order is left to go by.
            TALLY_ASSIGN_OR_RETURN(auto mine, tx.inbox().GetSequence(event.id));
            TALLY_ASSIGN_OR_RETURN(auto theirs, tx.inbox().GetSequence(StripeEventId(stored.event_id)));
            received_later = mine && theirs && *mine > *theirs;
        }
    }
    return Supersedes(incoming, stored, incoming_follows, stored_follows, received_later);
}

Result<std::string> WebhookProcessor::Apply(StoreTx& tx, const DecodedEvent& event, Timestamp now) {
    if (const auto* c = std::get_if<StripeCustomerData>(&event.object)) return ApplyCustomer(tx, event, *c, now);
    if (const auto* s = std::get_if<StripeSubscriptionData>(&event.object)) return ApplySubscription(tx, event, *s, now);
    if (const auto* i = std::get_if<StripeInvoiceData>(&event.object)) return ApplyInvoice(tx, event, *i, now);
    if (const auto* k = std::get_if<StripeCheckoutData>(&event.object)) {
        TALLY_ASSIGN_OR_RETURN(std::string outcome, ApplyCheckout(tx, event, *k, now));
        if (payment_listener_) TALLY_TRY(payment_listener_(tx, event));
        return outcome;
    }
    if (const auto* p = std::get_if<StripePaymentData>(&event.object)) {
        TALLY_ASSIGN_OR_RETURN(std::string outcome, ApplyPayment(tx, event, *p));
        if (payment_listener_) TALLY_TRY(payment_listener_(tx, event));
        return outcome;
    }
    if (const auto* d = std::get_if<StripeScheduleData>(&event.object)) return ApplySchedule(tx, event, *d, now);
    return std::string("ignored");
}

Result<CustomerRecord> WebhookProcessor::EnsureCustomer(StoreTx& tx, const StripeCustomerId& id, Timestamp now,
                                                        const std::string& cause) {
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.customers().FindByStripeId(id));
    if (existing) return std::move(*existing);
    CustomerRecord c;
    c.id = CustomerId(NewId("cust_"));
    c.stripe_customer_id = id;
    c.role = billing_.catalog().default_role();
    c.plan_id = billing_.catalog().default_plan().id.str();
    c.created_at = now;
    TALLY_TRY(tx.customers().Insert(c));
    TALLY_TRY(tx.audit().Append({0, c.id, now, "customer_created", "", c.role, cause, "stripe_customer=" + id.str()}));
    TALLY_TRY(billing_.EmitCustomerEvent(tx, "customer.created", c, now));
    return c;
}

Result<std::string> WebhookProcessor::ApplyCustomer(StoreTx& tx, const DecodedEvent& event,
                                                    const StripeCustomerData& data, Timestamp now) {
    const std::string cause = "event:" + event.id.str();
    const bool deleted = data.deleted || event.type == "customer.deleted";
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.customers().FindByStripeId(data.id));
    CustomerRecord customer;
    if (existing) {
        customer = std::move(*existing);
    } else if (!data.external_id.empty()) {
        TALLY_ASSIGN_OR_RETURN(auto by_external, tx.customers().FindByExternalId(data.external_id));
        if (by_external && !by_external->stripe_customer_id) {
            customer = std::move(*by_external);
            TALLY_TRY(billing_.LinkStripeCustomer(tx, customer, data.id, now, cause));
        } else {
            TALLY_ASSIGN_OR_RETURN(customer, EnsureCustomer(tx, data.id, now, cause));
        }
    } else {
        TALLY_ASSIGN_OR_RETURN(customer, EnsureCustomer(tx, data.id, now, cause));
    }
    if (customer.stripe_stamp) {
        TALLY_ASSIGN_OR_RETURN(bool newer, IsNewer(tx, event, deleted, *customer.stripe_stamp));
        if (!newer) return std::string("stale");
    }
    // What the app sees change (customer.updated's previous_attributes, keys as in the API's customer object).
    ApiObjectRenderer::Attributes previous;
    const auto text = [](const std::string& v) { return v.empty() ? ApiObjectRenderer::Value(nullptr) : ApiObjectRenderer::Value(v); };
    // Email and name come from Stripe only when this event changed them there, and never over an edit Tally has
    // not pushed yet (stripe_sync pending: Tally's value is the newer one and is on its way to Stripe). An echo of
    // an earlier push (a customer.updated that changed only metadata) thus cannot undo a later profile edit.
    const bool take_email = data.email_changed && !customer.stripe_sync_pending;
    const bool take_name = data.name_changed && !customer.stripe_sync_pending;
    const std::string email = take_email ? data.email : customer.email;
    const std::string name = take_name ? data.name : customer.name;
    if (customer.email != email) previous.emplace_back("email", text(customer.email));
    if (customer.name != name) previous.emplace_back("name", text(customer.name));
    if (customer.stripe_deleted != deleted) previous.emplace_back("deleted_in_stripe", customer.stripe_deleted);
    const std::string external_before = customer.external_id;
    customer.email = email;
    customer.name = name;
    customer.stripe_deleted = deleted;
    customer.stripe_stamp = EventStamp{event.created.unix_seconds(), EventTypeRank(event.type), event.id.str(), deleted};
    if (customer.external_id.empty() && !data.external_id.empty()) {
        TALLY_ASSIGN_OR_RETURN(auto taken, tx.customers().FindByExternalId(data.external_id));
        if (!taken) customer.external_id = data.external_id;
    }
    if (customer.external_id != external_before) previous.emplace_back("external_id", text(external_before));
    TALLY_TRY(tx.customers().Update(customer));
    if (!previous.empty()) TALLY_TRY(billing_.EmitCustomerEvent(tx, "customer.updated", customer, now, previous));
    TALLY_TRY(billing_.Reconcile(tx, customer, cause, now));
    return std::string("applied");
}

namespace {
/// The subscription fields the app sees change, with their values before (keys as in the API's subscription).
ApiObjectRenderer::Attributes SubscriptionChanges(const SubscriptionRecord& before, const SubscriptionRecord& after) {
    using V = ApiObjectRenderer::Value;
    ApiObjectRenderer::Attributes out;
    const auto text = [](const std::string& v) { return v.empty() ? V(nullptr) : V(v); };
    const auto time = [](const std::optional<Timestamp>& t) { return t ? V(t->unix_seconds()) : V(nullptr); };
    if (before.status != after.status) out.emplace_back("status", std::string(SubscriptionStatusName(before.status)));
    if (before.plan_id != after.plan_id) out.emplace_back("plan", text(before.plan_id));
    if (before.price_id != after.price_id) out.emplace_back("price", text(before.price_id));
    if (before.price_lookup_key != after.price_lookup_key) out.emplace_back("lookup_key", text(before.price_lookup_key));
    if (before.interval.unit != after.interval.unit) {
        out.emplace_back("interval", std::string(IntervalUnitName(before.interval.unit)));
    }
    if (before.interval.count != after.interval.count) out.emplace_back("interval_count", before.interval.count);
    if (before.unit_amount_minor != after.unit_amount_minor) out.emplace_back("unit_amount", before.unit_amount_minor);
    if (before.currency != after.currency) out.emplace_back("currency", text(before.currency));
    if (before.quantity != after.quantity) out.emplace_back("quantity", before.quantity);
    if (before.current_period_start != after.current_period_start) {
        out.emplace_back("current_period_start", before.current_period_start.unix_seconds());
    }
    if (before.current_period_end != after.current_period_end) {
        out.emplace_back("current_period_end", before.current_period_end.unix_seconds());
    }
    if (before.cancel_at_period_end != after.cancel_at_period_end) {
        out.emplace_back("cancel_at_period_end", before.cancel_at_period_end);
    }
    if (before.trial_end != after.trial_end) out.emplace_back("trial_end", time(before.trial_end));
    if (before.canceled_at != after.canceled_at) out.emplace_back("canceled_at", time(before.canceled_at));
    if (before.pause_collection != after.pause_collection) {
        // An object, as the API renders it ({"behavior": ...}), or null.
        out.emplace_back("pause_collection", before.pause_collection.empty()
                                                 ? V(nullptr)
                                                 : V(Metadata{{"behavior", before.pause_collection}}));
    }
    if (before.pending_change != after.pending_change) {
        // The plan and price it was going to move to, or null when none was pending.
        const auto& p = before.pending_change;
        out.emplace_back("pending_change", p ? V(Metadata{{"plan", p->plan_id}, {"price", p->price_id}}) : V(nullptr));
    }
    return out;
}
}  // namespace

Status WebhookProcessor::EmitSubscriptionEvents(StoreTx& tx, std::string_view event_type,
                                                const std::optional<SubscriptionRecord>& before,
                                                const SubscriptionRecord& after, const CustomerRecord& customer) {
    EventOutbox* outbox = billing_.outbox();
    if (!outbox) return {};
    const std::string object = outbox->renderer().Subscription(after, customer.id.str());
    const std::string id = after.id.str();
    const std::string owner = customer.id.str();
    if (!before) {
        TALLY_TRY(outbox->Emit(tx, "subscription.created", id, owner, object));
        if (after.status == SubscriptionStatus::kCanceled) TALLY_TRY(outbox->Emit(tx, "subscription.canceled", id, owner, object));
    } else {
        auto changes = SubscriptionChanges(*before, after);
        if (after.status == SubscriptionStatus::kCanceled && before->status != SubscriptionStatus::kCanceled) {
            TALLY_TRY(outbox->Emit(tx, "subscription.canceled", id, owner, object, changes));
        } else if (!changes.empty()) {
            TALLY_TRY(outbox->Emit(tx, "subscription.updated", id, owner, object, changes));
        }
    }
    if (event_type == "customer.subscription.trial_will_end") {
        TALLY_TRY(outbox->Emit(tx, "subscription.trial_will_end", id, owner, object));
    }
    return {};
}

namespace {
/// An audit entry "pending_change" when |after|'s pending change differs from |before| (plan, else price).
Status AuditPendingChange(StoreTx& tx, const CustomerId& customer, const std::optional<PendingChange>& before,
                          const SubscriptionRecord& after, const std::string& cause, Timestamp now) {
    if (before == after.pending_change) return {};
    const auto describe = [](const std::optional<PendingChange>& p) {
        return p ? (p->plan_id.empty() ? p->price_id : p->plan_id) : std::string();
    };
    std::string detail = "subscription=";
    detail += after.id.str();
    if (after.pending_change) {
        detail += " schedule=";
        detail += after.pending_change->schedule_id;
        detail += " effective_at=";
        detail += FormatRfc3339(after.pending_change->effective_at);
    }
    return tx.audit().Append({0, customer, now, "pending_change", describe(before), describe(after.pending_change),
                              cause, std::move(detail)});
}
}  // namespace

Result<std::optional<PendingChange>> WebhookProcessor::DerivePendingChange(StoreTx& tx, const SubscriptionRecord& sub) {
    if (IsTerminal(sub.status)) return std::optional<PendingChange>();
    TALLY_ASSIGN_OR_RETURN(auto schedules, tx.billing().ListSchedulesForSubscription(sub.id));
    for (const auto& schedule : schedules) {
        if (!IsOpenScheduleStatus(schedule.status)) continue;
        auto phase = PhaseChangeAt(schedule.phases, sub.current_period_end, sub.price_id, sub.quantity);
        if (!phase) continue;
        TALLY_ASSIGN_OR_RETURN(std::string lookup_key, tx.billing().PriceLookupKey(phase->price_id));
        const PriceMatch match = billing_.catalog().MatchPrice(lookup_key, phase->price_id);
        return std::optional<PendingChange>(PendingChange{schedule.id, phase->price_id,
                                                          match.plan ? match.plan->id.str() : "", phase->quantity,
                                                          sub.current_period_end});
    }
    return std::optional<PendingChange>();
}

Result<std::optional<SubscriptionRecord>> WebhookProcessor::RefreshPendingChange(StoreTx& tx,
                                                                                 const StripeSubscriptionId& id,
                                                                                 const std::string& cause,
                                                                                 Timestamp now) {
    TALLY_ASSIGN_OR_RETURN(auto stored, tx.billing().GetSubscription(id));
    if (!stored) return std::optional<SubscriptionRecord>();
    TALLY_ASSIGN_OR_RETURN(auto pending, DerivePendingChange(tx, *stored));
    if (pending == stored->pending_change) return stored;
    SubscriptionRecord after = *stored;
    after.pending_change = std::move(pending);
    TALLY_TRY(tx.billing().UpsertSubscription(after));
    TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().FindByStripeId(after.customer));
    if (customer) {
        TALLY_TRY(EmitSubscriptionEvents(tx, "", stored, after, *customer));
        TALLY_TRY(AuditPendingChange(tx, customer->id, stored->pending_change, after, cause, now));
    }
    return std::optional<SubscriptionRecord>(std::move(after));
}

Result<std::string> WebhookProcessor::ApplySchedule(StoreTx& tx, const DecodedEvent& event, const StripeScheduleData& data,
                                                    Timestamp now) {
    const bool terminal = IsTerminalScheduleStatus(data.status);
    TALLY_ASSIGN_OR_RETURN(auto stored, tx.billing().GetSchedule(data.id));
    if (stored) {
        // Stripe never reopens a released, completed or canceled schedule: a later-stamped open snapshot is an
        // older state (an answer Tally stored carries the snapshot's time, not the release's).
        if (stored->stamp.terminal && !terminal) return std::string("stale");
        TALLY_ASSIGN_OR_RETURN(bool newer, IsNewer(tx, event, terminal, stored->stamp));
        if (!newer) return std::string("stale");
    }
    SubscriptionScheduleRecord record{data, EventStamp{event.created.unix_seconds(), EventTypeRank(event.type),
                                                       event.id.str(), terminal}};
    // A released or completed schedule names its subscription as released_subscription; keep the one it managed.
    if (record.subscription.str().empty() && stored) record.subscription = stored->subscription;
    TALLY_TRY(tx.billing().UpsertSchedule(record));
    TALLY_TRY(RefreshPendingChange(tx, record.subscription, "event:" + event.id.str(), now));
    return std::string("applied");
}

Result<std::optional<SubscriptionRecord>> WebhookProcessor::ApplyScheduleResponse(
    StoreTx& tx, const StripeScheduleData& data, const std::optional<EventStamp>& read_before,
    const std::vector<std::pair<std::string, std::string>>& known_prices, const std::string& request_id,
    const std::string& cause, Timestamp now) {
    const bool terminal = IsTerminalScheduleStatus(data.status);
    TALLY_ASSIGN_OR_RETURN(auto stored, tx.billing().GetSchedule(data.id));
    for (const auto& [price_id, lookup_key] : known_prices) TALLY_TRY(tx.billing().RememberPriceLookupKey(price_id, lookup_key));
    // Stamped in the events' time domain, as ApplySubscriptionResponse stamps subscriptions: a new schedule is as
    // old as its creation (so the same second's subscription_schedule.created, an earlier state, is stale against
    // it, and the .updated that follows, "evt_" > "api_", brings the same state); a change is as old as the
    // snapshot it changed, and is stored only if no event was applied since that snapshot was read.
    bool store = false;
    EventStamp stamp{data.created.unix_seconds(), EventTypeRank("subscription_schedule.updated"), "api_" + request_id,
                     terminal};
    if (!stored) {
        store = true;
    } else if (read_before) {
        store = stored->stamp.created == read_before->created && stored->stamp.type_rank == read_before->type_rank &&
                stored->stamp.event_id == read_before->event_id && !stored->stamp.terminal;
        stamp.created = stored->stamp.created;
        stamp.type_rank = stored->stamp.type_rank;
    } else {
        store = Supersedes(stamp, stored->stamp, false, false, false);
    }
    if (store) {
        SubscriptionScheduleRecord record{data, stamp};
        if (record.subscription.str().empty() && stored) record.subscription = stored->subscription;
        TALLY_TRY(tx.billing().UpsertSchedule(record));
    }
    const StripeSubscriptionId sub = !data.subscription.str().empty() ? data.subscription
                                     : stored                          ? stored->subscription
                                                                       : data.subscription;
    return RefreshPendingChange(tx, sub, cause, now);
}

Status WebhookProcessor::StoreSubscription(StoreTx& tx, std::string_view event_type,
                                           const std::optional<SubscriptionRecord>& stored, SubscriptionRecord& sub,
                                           CustomerRecord& customer, const std::string& cause, Timestamp now) {
    TALLY_ASSIGN_OR_RETURN(sub.pending_change, DerivePendingChange(tx, sub));
    TALLY_TRY(tx.billing().UpsertSubscription(sub));
    TALLY_TRY(EmitSubscriptionEvents(tx, event_type, stored, sub, customer));
    TALLY_TRY(AuditPendingChange(tx, customer.id, stored ? stored->pending_change : std::nullopt, sub, cause, now));
    if (sub.plan_id.empty()) {
        TALLY_TRY(tx.audit().Append({0, customer.id, now, "unknown_price", "", sub.price_id, cause,
                                  "lookup_key='" + sub.price_lookup_key + "' matches no plan; grants nothing"}));
    }
    if (event_type == "customer.subscription.trial_will_end" && sub.trial_end) {
        TALLY_TRY(tx.audit().Append({0, customer.id, now, "trial_will_end", "", FormatRfc3339(*sub.trial_end), cause,
                                  "subscription=" + sub.id.str()}));
    }
    TALLY_TRY(billing_.Reconcile(tx, customer, cause, now));
    if (subscription_listener_) TALLY_TRY(subscription_listener_(tx, customer.id, stored, sub));
    return {};
}

Result<std::string> WebhookProcessor::ApplySubscription(StoreTx& tx, const DecodedEvent& event,
                                                        const StripeSubscriptionData& data, Timestamp now) {
    const std::string cause = "event:" + event.id.str();
    const bool terminal = IsTerminal(data.status);
    TALLY_ASSIGN_OR_RETURN(auto stored, tx.billing().GetSubscription(data.id));
    TALLY_ASSIGN_OR_RETURN(CustomerRecord customer, EnsureCustomer(tx, data.customer, now, cause));
    if (stored) {
        TALLY_ASSIGN_OR_RETURN(bool newer, IsNewer(tx, event, terminal, stored->stamp));
        if (!newer) return std::string("stale");
    }
    const PriceMatch match = billing_.catalog().MatchPrice(data.price_lookup_key, data.price_id);
    SubscriptionRecord sub{data, match.plan ? match.plan->id.str() : "",
                           EventStamp{event.created.unix_seconds(), EventTypeRank(event.type), event.id.str(), terminal},
                           std::nullopt};
    TALLY_TRY(StoreSubscription(tx, event.type, stored, sub, customer, cause, now));
    return std::string("applied");
}

namespace {
bool SameStamp(const EventStamp& a, const EventStamp& b) {
    return a.created == b.created && a.type_rank == b.type_rank && a.event_id == b.event_id && a.terminal == b.terminal;
}
}  // namespace

Result<AppliedSubscription> WebhookProcessor::ApplySubscriptionResponse(StoreTx& tx, const StripeSubscriptionData& data,
                                                                        const std::optional<EventStamp>& read_before,
                                                                        const std::string& request_id,
                                                                        const std::string& cause, Timestamp now) {
    TALLY_ASSIGN_OR_RETURN(auto stored, tx.billing().GetSubscription(data.id));
    TALLY_ASSIGN_OR_RETURN(CustomerRecord customer, EnsureCustomer(tx, data.customer, now, cause));
    const PriceMatch match = billing_.catalog().MatchPrice(data.price_lookup_key, data.price_id);
    const bool terminal = IsTerminal(data.status);
    // The answer's stamp lives in the events' time domain, never in Tally's clock: a creation is as old as the
    // subscription (so the same second's customer.subscription.created, an earlier state, is stale against it);
    // a change is as old as the snapshot it changed. Any later event, and the change's own (its id "evt_..." sorts
    // after "api_..."), supersedes it: the webhook that follows brings the same state and emits nothing.
    const EventStamp stamp = stored ? EventStamp{stored->stamp.created, stored->stamp.type_rank, "api_" + request_id, terminal}
                                    : EventStamp{data.created.unix_seconds(), EventTypeRank("customer.subscription.updated"),
                                                 "api_" + request_id, terminal};
    AppliedSubscription out{SubscriptionRecord{data, match.plan ? match.plan->id.str() : "", stamp, std::nullopt},
                            customer, false};
    bool store = false;
    if (!stored) {
        store = true;
    } else if (!read_before) {
        // A creation whose own events got here first: the answer wins only where it would win as an event (over
        // the same second's customer.subscription.created, not over a later update).
        const EventStamp created{data.created.unix_seconds(), EventTypeRank("customer.subscription.updated"),
                                 "api_" + request_id, terminal};
        out.subscription.stamp = created;
        store = Supersedes(created, stored->stamp, false, false, false);
    } else {
        // Compare-and-set: a webhook applied since the caller read |read_before| may carry a newer state than this
        // answer; then the answer is only returned, and the events decide what is stored.
        store = SameStamp(stored->stamp, *read_before) && !stored->stamp.terminal;
    }
    if (!store) {
        TALLY_ASSIGN_OR_RETURN(out.subscription.pending_change, DerivePendingChange(tx, out.subscription));
        return out;
    }
    TALLY_TRY(StoreSubscription(tx, "", stored, out.subscription, out.customer, cause, now));
    out.stored = true;
    return out;
}

Result<std::string> WebhookProcessor::ApplyInvoice(StoreTx& tx, const DecodedEvent& event, const StripeInvoiceData& data,
                                                   Timestamp now) {
    const std::string cause = "event:" + event.id.str();
    TALLY_ASSIGN_OR_RETURN(CustomerRecord customer, EnsureCustomer(tx, data.customer, now, cause));
    TALLY_ASSIGN_OR_RETURN(auto stored, tx.billing().GetInvoice(data.id));
    const bool terminal = data.status == "paid" || data.status == "void";
    bool newer = true;
    if (stored) {
        TALLY_ASSIGN_OR_RETURN(newer, IsNewer(tx, event, terminal, stored->stamp));
    }
    InvoiceRecord invoice{data.id, data.customer, data.subscription_id, data.status, data.amount_due_minor,
                          data.amount_paid_minor, data.currency,
                          EventStamp{event.created.unix_seconds(), EventTypeRank(event.type), event.id.str(),
                                     terminal}};
    invoice.created = data.created;
    invoice.attempt_count = data.attempt_count;
    invoice.next_payment_attempt = data.next_payment_attempt;
    invoice.hosted_invoice_url = data.hosted_invoice_url;
    invoice.number = data.number;
    if (newer) TALLY_TRY(tx.billing().UpsertInvoice(invoice));
    // Each Stripe event is applied once (the inbox deduplicates), so each payment outcome is told once.
    if (EventOutbox* outbox = billing_.outbox();
        outbox && (event.type == "invoice.paid" || event.type == "invoice.payment_failed")) {
        TALLY_TRY(outbox->Emit(tx, event.type, data.id, customer.id.str(),
                               outbox->renderer().Invoice(invoice, customer.id.str())));
    }
    // Payment outcomes are facts, not snapshots: each is kept whatever order it arrives in.
    const bool failed = event.type == "invoice.payment_failed";
    const bool succeeded = event.type == "invoice.paid" || event.type == "invoice.payment_succeeded";
    if ((failed || succeeded) && !data.subscription_id.empty()) {
        TALLY_TRY(tx.billing().InsertPaymentAttempt({event.id.str(), data.id, data.subscription_id, event.created, succeeded}));
    }
    if (failed) {
        TALLY_ASSIGN_OR_RETURN(CustomerView view, billing_.BuildView(tx, customer, now));
        std::string detail = "invoice=" + data.id + " amount_due=" + std::to_string(data.amount_due_minor) + " " +
                             data.currency + " attempt_count=" + std::to_string(data.attempt_count);
        if (view.decision.role != billing_.catalog().default_role()) {
            TALLY_ASSIGN_OR_RETURN(auto attempts, tx.billing().ListPaymentAttempts(data.subscription_id));
            const auto since = BillingService::PastDueSince(attempts).value_or(event.created);
            detail += "; role '" + view.decision.role + "' drops to '" + billing_.catalog().default_role() + "' at " +
                      FormatRfc3339(since.PlusSeconds(billing_.config().grace_period_seconds)) +
                      " unless a payment succeeds";
        }
        TALLY_TRY(tx.audit().Append({0, customer.id, now, "downgrade_warning", view.decision.role,
                                  billing_.catalog().default_role(), cause, detail}));
    }
    if (event.type == "invoice.payment_action_required") {
        TALLY_TRY(tx.audit().Append({0, customer.id, now, "payment_action_required", "", data.id, cause,
                                  "the customer must authenticate the payment"}));
    }
    TALLY_TRY(billing_.Reconcile(tx, customer, cause, now));
    return std::string(newer || failed || succeeded ? "applied" : "stale");
}

Result<std::string> WebhookProcessor::ApplyCheckout(StoreTx& tx, const DecodedEvent& event,
                                                    const StripeCheckoutData& data, Timestamp now) {
    if (event.type != "checkout.session.completed" || data.customer.empty()) return std::string("ignored");
    const std::string cause = "event:" + event.id.str();
    // The app passes its customer as client_reference_id (Tally id or external id) or metadata.external_id.
    std::optional<CustomerRecord> customer;
    for (const std::string& ref : {data.client_reference_id, data.external_id}) {
        if (ref.empty() || customer) continue;
        TALLY_ASSIGN_OR_RETURN(customer, tx.customers().Get(CustomerId(ref)));
        if (!customer) {
            TALLY_ASSIGN_OR_RETURN(customer, tx.customers().FindByExternalId(ref));
        }
    }
    if (!customer) {
        TALLY_ASSIGN_OR_RETURN(CustomerRecord placeholder, EnsureCustomer(tx, data.customer, now, cause));
        customer = std::move(placeholder);
    } else {
        TALLY_TRY(billing_.LinkStripeCustomer(tx, *customer, data.customer, now, cause));
    }
    TALLY_TRY(tx.audit().Append({0, customer->id, now, "checkout_completed", "", data.id, cause,
                              "mode=" + data.mode + " payment_status=" + data.payment_status +
                                  (data.subscription_id.empty() ? "" : " subscription=" + data.subscription_id)}));
    TALLY_TRY(billing_.Reconcile(tx, *customer, cause, now));
    return std::string("applied");
}

Result<std::string> WebhookProcessor::ApplyPayment(StoreTx& tx, const DecodedEvent& event, const StripePaymentData& data) {
    TALLY_ASSIGN_OR_RETURN(auto stored, tx.billing().GetPayment(data.id));
    const bool terminal = data.status == "succeeded" || data.status == "canceled";
    if (stored) {
        TALLY_ASSIGN_OR_RETURN(bool newer, IsNewer(tx, event, terminal, stored->stamp));
        // Refunds only grow: keep the largest refunded amount even from an older snapshot.
        if (!newer) {
            if (data.amount_refunded_minor > stored->amount_refunded_minor) {
                stored->amount_refunded_minor = data.amount_refunded_minor;
                TALLY_TRY(tx.billing().UpsertPayment(*stored));
                return std::string("applied");
            }
            return std::string("stale");
        }
    }
    PaymentRecord p{data.id, data.object, data.customer, data.amount_minor, data.amount_refunded_minor, data.currency,
                    data.status,
                    EventStamp{event.created.unix_seconds(), EventTypeRank(event.type), event.id.str(), terminal}};
    p.created = data.created;
    p.failure_message = data.failure_message;
    if (stored && stored->amount_refunded_minor > p.amount_refunded_minor) p.amount_refunded_minor = stored->amount_refunded_minor;
    TALLY_TRY(tx.billing().UpsertPayment(p));
    return std::string("applied");
}

WebhookWorker::WebhookWorker(WebhookProcessor& processor, BillingService& billing, int poll_interval_ms,
                             std::function<size_t()> ingest_backlog, std::function<void()> on_idle)
    : processor_(processor), billing_(billing), poll_interval_ms_(poll_interval_ms),
      ingest_backlog_(std::move(ingest_backlog)), on_idle_(std::move(on_idle)) {}

WebhookWorker::~WebhookWorker() { Stop(); }

void WebhookWorker::Start() {
    thread_ = std::thread([this] {
        NameCurrentThread("tally-worker");
        LowerCurrentThreadPriority(kWorkerNiceIncrement);
        Run();
    });
}

void WebhookWorker::Notify() {
    std::lock_guard lock(mu_);
    pending_ = true;
    cv_.notify_one();
}

void WebhookWorker::Stop() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
        cv_.notify_one();
    }
    if (thread_.joinable()) thread_.join();
}

void WebhookWorker::Run() {
    for (;;) {
        {
            std::unique_lock lock(mu_);
            cv_.wait_for(lock, std::chrono::milliseconds(poll_interval_ms_), [this] { return stopping_ || pending_; });
            if (stopping_) return;
            pending_ = false;
        }
        // Keep draining while a full batch came back: more may be waiting.
        for (;;) {
            if (ingest_backlog_) {
                const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kProcessingDeferMsMax);
                while (ingest_backlog_() > 0 && std::chrono::steady_clock::now() < deadline) {
                    std::unique_lock lock(mu_);
                    if (cv_.wait_for(lock, std::chrono::milliseconds(2), [this] { return stopping_; })) return;
                }
            }
            // No exception may end the worker: a throwing batch was rolled back by the store and is retried on the
            // next poll, like a failed commit.
            Result<int> n = Internal("not run");
            try {
                n = processor_.ProcessDue();
            } catch (...) {
                n = Internal("processing threw an exception");
            }
            if (!n.ok() || *n < kWebhookProcessBatchMax) break;
            std::lock_guard lock(mu_);
            if (stopping_) return;
        }
        try {
            (void)billing_.SweepRoles();
            if (on_idle_) on_idle_();
        } catch (...) {  // NOLINT(bugprone-empty-catch): the sweep runs again on the next poll
        }
    }
}

}  // namespace tally
