#include "app/usage_service.hpp"

#include <map>

#include "app/event_outbox.hpp"
#include "app/idempotency.hpp"
#include "domain/text.hpp"

#include <unordered_map>

namespace tally {
namespace {

Error NoSuchCustomer(const CustomerId& id) { return NotFound("no such customer: '" + id.str() + "'", "customer"); }

/// The billing cycle of the subscription that decides the customer's plan, if it is still running.
std::optional<BillingCycle> SubscriptionCycle(const CustomerView& view) {
    if (!view.primary || IsTerminal(view.primary->status)) return std::nullopt;
    if (view.primary->current_period_end <= view.primary->current_period_start) return std::nullopt;
    return BillingCycle{Period{view.primary->current_period_start, view.primary->current_period_end},
                        view.primary->interval};
}

}  // namespace


UsageService::UsageService(Store& store, BillingService& billing, const Clock& clock, EventOutbox* outbox,
                           std::vector<int> thresholds_percent)
    : store_(store), billing_(billing), clock_(clock), outbox_(outbox), thresholds_(std::move(thresholds_percent)),
      checks_(std::make_unique<ItemWriteBatch<PendingCheck, UsageService, &UsageService::CheckBatch>>(*this)) {}

UsageService::~UsageService() = default;

Result<MeterState> UsageService::Load(StoreTx& tx, const CustomerView& view, const Meter& meter,
                                      const std::optional<Period>& counter_period,
                                      const std::vector<LimitOverrideRecord>& overrides) {
    MeterState state;
    state.meter = meter;
    if (view.decision.plan != nullptr) {
        if (auto it = view.decision.plan->limits.find(meter.name); it != view.decision.plan->limits.end()) {
            state.limit = it->second;
        }
    }
    // An admin's exception in force replaces the plan's limit and/or adds to it; the plan decides again once it
    // expires. A plan change moves the plan's limit at once (the plan is read on every call).
    for (const auto& o : overrides) {
        if (o.meter != meter.name || (o.expires_at && *o.expires_at <= clock_.Now())) continue;
        if (o.limit) state.limit = *o.limit;
        if (state.limit) state.limit = *state.limit + o.extra;
        state.override_record = o;
    }
    Timestamp period_start(0);
    if (meter.kind == MeterKind::kCounter) {
        state.period = counter_period ? *counter_period : UsagePeriod(clock_.Now(), SubscriptionCycle(view));
        period_start = state.period->start;
    }
    if (meter.counts_members && view.customer.type == CustomerType::kOrganization) {
        // Seats of an organization are its members, counted now: nothing to record, nothing to drift.
        TALLY_ASSIGN_OR_RETURN(auto members, tx.customers().ListMembers(view.customer.id));
        state.current = static_cast<int64_t>(members.size());
    } else {
        TALLY_ASSIGN_OR_RETURN(state.current, tx.usage().Value(view.customer.id, meter.name, period_start));
    }
    const UsageDecision d = DecideUsage(meter.mode, state.current, 0, state.limit);
    state.remaining = d.remaining;
    state.overage = d.overage;
    return state;
}

Status UsageService::Announce(StoreTx& tx, const CustomerView& view, const MeterState& before, const MeterState& after) {
    const Timestamp period_start = after.period ? after.period->start : Timestamp(0);
    if (after.meter.kind == MeterKind::kGauge && after.current < before.current && after.limit) {
        // A gauge that fell back under a threshold (projects deleted) warns again when it next crosses it; a
        // counter only grows within its period.
        const std::vector<int> still = CrossedThresholds(-1, after.current, after.limit, thresholds_);
        if (still.size() < thresholds_.size()) {
            TALLY_TRY(tx.usage().ClearThresholds(view.customer.id, after.meter.name, period_start,
                                                 thresholds_[still.size()]));
        }
    }
    for (int threshold : CrossedThresholds(before.current, after.current, after.limit, thresholds_)) {
        // Once per threshold, meter and period, however many concurrent calls cross it: the mark is written in the
        // transaction that crossed it, and the store serialises those.
        TALLY_ASSIGN_OR_RETURN(bool first, tx.usage().MarkThreshold(view.customer.id, after.meter.name, period_start,
                                                                    threshold, clock_.Now()));
        if (!first || outbox_ == nullptr) continue;
        TALLY_TRY(outbox_->Emit(tx, "usage.threshold_reached",
                                "usage:" + view.customer.id.str() + ":" + after.meter.name, view.customer.id.str(),
                                outbox_->renderer().UsageThreshold(view.customer.id, after, threshold)));
    }
    return {};
}

Result<UsageOutcome> UsageService::Record(StoreTx& tx, const UsageInput& in) {
    TALLY_ASSIGN_OR_RETURN(auto results, RecordEvents(tx, "", {UsageEventInput{in, ""}}));
    UsageEventResult& r = results.front();
    if (r.status == UsageEventResult::Status::kRejected) return *r.error;
    UsageOutcome out;
    out.recorded = true;
    out.state = StateAfter(r.record, r.meter);
    out.reason = out.state.overage > 0 ? "overage" : "";
    return out;
}

MeterState UsageService::StateAfter(const UsageEventRecord& record, const Meter* meter) {
    MeterState state;
    state.meter = meter != nullptr ? *meter : Meter{record.meter};
    state.current = record.current;
    state.limit = record.limit;
    const UsageDecision d = DecideUsage(state.meter.mode, record.current, 0, record.limit);
    state.remaining = d.remaining;
    state.overage = d.overage;
    if (record.period_end) state.period = Period{record.period_start, *record.period_end};
    return state;
}

namespace {

/// The replayed event's fields against the new one's: the same event, or a key reused for another.
bool SameEvent(const UsageEventRecord& recorded, const UsageInput& in) {
    if (recorded.customer_id != in.customer || recorded.meter != in.meter || recorded.value != in.value) return false;
    if ((recorded.action == "set") != in.set) return false;
    if (recorded.timestamp_given != in.at.has_value()) return false;
    return !in.at || *in.at == recorded.at;
}

Error KeyReusedForOtherEvent() { return IdempotencyKeyReused("idempotency_key"); }

}  // namespace

Result<std::vector<UsageEventResult>> UsageService::RecordEvents(
    StoreTx& tx, const std::string& api_key_id, const std::vector<UsageEventInput>& events,
    const std::function<std::string(size_t index)>& legacy_request_hash) {
    using Status = UsageEventResult::Status;
    const Catalog& catalog = billing_.catalog();
    const Timestamp now = clock_.Now();
    // What the call has read, kept for its later events: each customer's view and overrides, and each meter's
    // state as the events so far left it (written back once at the end).
    struct CustomerState {
        std::optional<CustomerView> view;  // nullopt: no such customer
        std::vector<LimitOverrideRecord> overrides;
    };
    struct MeterKey {
        std::string customer;
        std::string meter;
        int64_t period_start;
        bool operator==(const MeterKey&) const = default;
    };
    struct MeterKeyHash {
        size_t operator()(const MeterKey& k) const {
            return std::hash<std::string>{}(k.customer) ^ (std::hash<std::string>{}(k.meter) * 31) ^
                   std::hash<int64_t>{}(k.period_start);
        }
    };
    std::unordered_map<std::string, CustomerState> customers;
    struct Tracked {
        MeterState state;
        bool written = false;
    };
    std::unordered_map<MeterKey, Tracked, MeterKeyHash> meters;
    std::vector<MeterKey> touched;                      // written, in first-write order
    std::unordered_map<std::string, size_t> keyed;      // idempotency key -> the result of this call that has it
    std::optional<bool> legacy_keys;                    // asked at the first key not found among the events

    std::vector<UsageEventResult> results(events.size());
    const auto reject = [&](size_t i, Error e) {
        results[i].status = Status::kRejected;
        results[i].error = std::move(e);
    };
    for (size_t i = 0; i < events.size(); ++i) {
        const UsageInput& in = events[i].in;
        const std::string& key = events[i].idempotency_key;
        if (!key.empty()) {
            // A key seen earlier in this call, or recorded before: replay or refuse, before anything is checked.
            if (auto it = keyed.find(key); it != keyed.end()) {
                const UsageEventResult& first = results[it->second];
                if (!SameEvent(first.record, in)) {
                    reject(i, KeyReusedForOtherEvent());
                } else {
                    results[i] = first;
                    results[i].status = Status::kReplayed;
                }
                continue;
            }
            TALLY_ASSIGN_OR_RETURN(auto recorded, tx.usage().FindKeyedEvent(api_key_id, key));
            if (recorded) {
                if (!SameEvent(*recorded, in)) {
                    reject(i, KeyReusedForOtherEvent());
                    continue;
                }
                results[i].status = Status::kReplayed;
                results[i].meter = catalog.FindMeter(recorded->meter);
                results[i].record = std::move(*recorded);
                keyed.emplace(key, i);
                continue;
            }
            if (!legacy_keys) {
                TALLY_ASSIGN_OR_RETURN(legacy_keys, tx.usage().HasLegacyKeys());
            }
            if (*legacy_keys) {
                TALLY_ASSIGN_OR_RETURN(auto legacy, tx.usage().FindLegacyKey(api_key_id, key));
                if (legacy) {
                    if (!legacy_request_hash || legacy->request_hash != legacy_request_hash(i)) {
                        reject(i, KeyReusedForOtherEvent());
                    } else {
                        results[i].status = Status::kReplayed;
                        results[i].legacy_response = std::move(legacy->response_body);
                    }
                    continue;
                }
            }
        }
        if (in.value > kUsageAmountMax || in.value < -kUsageAmountMax) {
            reject(i, InvalidArgument("value must be at most 2^53 in magnitude", "value"));
            continue;
        }
        const Meter* meter = catalog.FindMeter(in.meter);
        if (meter == nullptr) {
            reject(i, NotFound("no such meter: '" + in.meter + "'", "meter"));
            continue;
        }
        if (meter->kind == MeterKind::kCounter && in.value < 0) {
            reject(i, InvalidArgument("a counter only grows: value must not be negative (" + meter->name +
                                          " is a counter)",
                                      "value"));
            continue;
        }
        if (in.set && in.value < 0) {
            reject(i, InvalidArgument("a meter cannot be set below 0", "value"));
            continue;
        }
        const Timestamp at = in.at.value_or(now);
        if (at.unix_seconds() > now.unix_seconds() + kUsageClockSkewSecondsMax) {
            reject(i, InvalidArgument("timestamp is more than " + std::to_string(kUsageClockSkewSecondsMax) +
                                          " s in the future",
                                      "timestamp"));
            continue;
        }
        auto [cit, new_customer] = customers.try_emplace(in.customer.str());
        CustomerState& customer = cit->second;
        if (new_customer) {
            TALLY_ASSIGN_OR_RETURN(auto record, tx.customers().Get(in.customer));
            if (record) {
                TALLY_ASSIGN_OR_RETURN(customer.view, billing_.BuildView(tx, *record, now));
                TALLY_ASSIGN_OR_RETURN(customer.overrides, tx.usage().ListOverrides(in.customer));
            }
        }
        if (!customer.view) {
            reject(i, NoSuchCustomer(in.customer));
            continue;
        }
        const CustomerView& view = *customer.view;
        if (meter->counts_members && view.customer.type == CustomerType::kOrganization) {
            reject(i, InvalidArgument(meter->name + " counts the organization's members: add or remove members instead",
                                      "meter"));
            continue;
        }
        std::optional<Period> period;
        if (meter->kind == MeterKind::kCounter) {
            // A late event counts in the period it happened in: the current one, or the previous one while it is
            // within its grace window (domain/usage.hpp); an older one is closed.
            const std::optional<BillingCycle> cycle = SubscriptionCycle(view);
            const Period current = UsagePeriod(now, cycle);
            if (!in.at) {
                period = current;  // usage as it happens counts in the period being billed
            } else {
                Timestamp previous_start = UsagePeriod(current.start.PlusSeconds(-1), std::nullopt).start;
                if (cycle) {
                    // The previous billing period's start, as recorded when it was current; else one period's length.
                    TALLY_ASSIGN_OR_RETURN(auto recorded,
                                           tx.usage().LatestPeriodBefore(in.customer, meter->name, current.start));
                    previous_start = recorded ? *recorded : current.start.PlusSeconds(-current.length_seconds());
                }
                auto chosen = CounterPeriodFor(at, now, current, previous_start);
                if (!chosen.ok()) {
                    reject(i, chosen.error());
                    continue;
                }
                period = *chosen;
            }
        }
        const Timestamp period_start = period ? period->start : Timestamp(0);
        MeterKey mkey{in.customer.str(), meter->name, period_start.unix_seconds()};
        auto mit = meters.find(mkey);
        if (mit == meters.end()) {
            TALLY_ASSIGN_OR_RETURN(MeterState loaded, Load(tx, view, *meter, period, customer.overrides));
            mit = meters.emplace(mkey, Tracked{std::move(loaded)}).first;
        }
        MeterState& state = mit->second.state;
        const int64_t after_value = in.set ? in.value : state.current + in.value;
        if (after_value < 0) {
            reject(i, InvalidArgument("the meter would go below 0", "value"));
            continue;
        }
        if (after_value > kUsageAmountMax) {
            reject(i, InvalidArgument("the meter would pass 2^53", "value"));
            continue;
        }
        const MeterState before = state;
        state.current = after_value;
        const UsageDecision d = DecideUsage(meter->mode, after_value, 0, state.limit);
        state.remaining = d.remaining;
        state.overage = d.overage;
        if (!mit->second.written) {
            mit->second.written = true;
            touched.push_back(mkey);
        }
        UsageEventRecord record{0,
                                in.customer,
                                meter->name,
                                period_start,
                                in.set ? "set" : "increment",
                                in.value,
                                after_value - before.current,
                                at,
                                now,
                                key.empty() ? "" : api_key_id,
                                key,
                                in.at.has_value(),
                                after_value,
                                state.limit,
                                period ? std::optional<Timestamp>(period->end) : std::nullopt};
        TALLY_TRY(Announce(tx, view, before, state));
        results[i].status = Status::kRecorded;
        results[i].record = std::move(record);
        results[i].meter = meter;
        if (!key.empty()) keyed.emplace(key, i);
    }
    // Appended in one go, in the events' order; a key seen twice in the call was replayed above, and the keys
    // recorded before were looked up, so a conflict here is another transaction's (the caller's retry decides).
    std::vector<const UsageEventRecord*> appended;
    appended.reserve(events.size());
    for (const auto& r : results) {
        if (r.status == Status::kRecorded) appended.push_back(&r.record);
    }
    TALLY_TRY(tx.usage().AppendEvents(appended));
    for (const MeterKey& k : touched) {
        TALLY_TRY(tx.usage().PutValue(CustomerId(k.customer), k.meter, Timestamp(k.period_start),
                                      meters.at(k).state.current, now));
    }
    return results;
}

Result<UsageOutcome> UsageService::Check(StoreTx& tx, const CustomerId& customer, const std::string& meter_name,
                                         int64_t amount, bool record) {
    if (record) {
        PendingCheck one;
        one.customer = customer;
        one.meter = meter_name;
        one.amount = amount;
        TALLY_TRY(CheckBatch(tx, {&one}));
        return std::move(*one.out);
    }
    if (amount < 1 || amount > kUsageAmountMax) return InvalidArgument("amount must be between 1 and 2^53", "amount");
    const Meter* meter = billing_.catalog().FindMeter(meter_name);
    if (meter == nullptr) return NotFound("no such meter: '" + meter_name + "'", "meter");
    TALLY_ASSIGN_OR_RETURN(auto rec, tx.customers().Get(customer));
    if (!rec) return NoSuchCustomer(customer);
    TALLY_ASSIGN_OR_RETURN(CustomerView view, billing_.BuildView(tx, *rec, clock_.Now()));
    TALLY_ASSIGN_OR_RETURN(auto overrides, tx.usage().ListOverrides(customer));
    TALLY_ASSIGN_OR_RETURN(MeterState before, Load(tx, view, *meter, std::nullopt, overrides));
    const UsageDecision d = DecideUsage(meter->mode, before.current, amount, before.limit);
    UsageOutcome out;
    out.allowed = d.allowed;
    out.reason = d.reason;
    out.state = before;
    // A read-only check reports what recording would leave; a refused one, the meter as it is.
    if (d.allowed) {
        out.state.remaining = d.remaining;
        out.state.overage = d.overage;
    }
    return out;
}

Status UsageService::CheckBatch(StoreTx& tx, const std::vector<PendingCheck*>& items) {
    // One customer's view and overrides, read at its first check of the batch.
    struct Account {
        std::optional<Error> refused;  // no such customer, or reading it failed
        std::optional<CustomerView> view;
        std::vector<LimitOverrideRecord> overrides;
    };
    // One meter's state as the batch left it.
    struct Counter {
        MeterState state;
        bool moved = false;
    };
    std::map<std::string, Account> accounts;
    std::map<std::pair<std::string, std::string>, Counter> counters;
    std::vector<UsageEventRecord> events;
    events.reserve(items.size());
    const Timestamp now = clock_.Now();
    for (PendingCheck* item : items) item->out.reset();
    for (PendingCheck* item : items) {
        // Decided before anything is written for it: a refusal (or a check not allowed) leaves nothing.
        Counter* counter = nullptr;
        const Account* account = nullptr;
        auto decided = [&]() -> Result<UsageOutcome> {
            if (item->amount < 1 || item->amount > kUsageAmountMax) {
                return InvalidArgument("amount must be between 1 and 2^53", "amount");
            }
            const Meter* meter = billing_.catalog().FindMeter(item->meter);
            if (meter == nullptr) return NotFound("no such meter: '" + item->meter + "'", "meter");
            auto [it, added] = accounts.try_emplace(item->customer.str());
            Account& a = it->second;
            if (added) {
                // Read once; what fails here refuses each of the customer's checks in the batch.
                Status read = [&]() -> Status {
                    TALLY_ASSIGN_OR_RETURN(auto rec, tx.customers().Get(item->customer));
                    if (!rec) return NoSuchCustomer(item->customer);
                    TALLY_ASSIGN_OR_RETURN(a.view, billing_.BuildView(tx, *rec, now));
                    TALLY_ASSIGN_OR_RETURN(a.overrides, tx.usage().ListOverrides(item->customer));
                    return {};
                }();
                if (!read.ok()) a.refused = read.error();
            }
            if (a.refused) return *a.refused;
            account = &a;
            if (meter->counts_members && a.view->customer.type == CustomerType::kOrganization) {
                return InvalidArgument(meter->name + " counts the organization's members: check without record, "
                                                     "then add the member",
                                       "record");
            }
            auto c = counters.find({item->customer.str(), meter->name});
            if (c == counters.end()) {
                TALLY_ASSIGN_OR_RETURN(MeterState loaded, Load(tx, *a.view, *meter, std::nullopt, a.overrides));
                c = counters.emplace(std::make_pair(item->customer.str(), meter->name), Counter{std::move(loaded)})
                        .first;
            }
            counter = &c->second;
            const MeterState& before = counter->state;
            const UsageDecision d = DecideUsage(meter->mode, before.current, item->amount, before.limit);
            UsageOutcome out;
            out.allowed = d.allowed;
            out.reason = d.reason;
            out.state = before;
            if (d.allowed) {
                out.recorded = true;
                out.state.current = d.after;
                out.state.remaining = d.remaining;
                out.state.overage = d.overage;
            }
            return out;
        }();
        if (!decided.ok() && IsStoreFailure(decided.error())) return decided.error();
        item->out = std::move(decided);
        if (!item->out->ok() || !(*item->out)->recorded) continue;
        // Allowed: counted in memory now, written with the batch's others below.
        const UsageOutcome& out = **item->out;
        const MeterState before = counter->state;
        const Timestamp period_start = before.period ? before.period->start : Timestamp(0);
        UsageEventRecord event{0, item->customer, before.meter.name, period_start, "increment", item->amount,
                               item->amount, now, now};
        event.current = out.state.current;
        event.limit = before.limit;
        if (before.period) event.period_end = before.period->end;
        events.push_back(std::move(event));
        counter->state.current = out.state.current;
        counter->state.remaining = out.state.remaining;
        counter->state.overage = out.state.overage;
        counter->moved = true;
        TALLY_TRY(Announce(tx, *account->view, before, out.state));
    }
    for (const auto& [key, c] : counters) {
        if (!c.moved) continue;
        const Timestamp period_start = c.state.period ? c.state.period->start : Timestamp(0);
        TALLY_TRY(tx.usage().PutValue(CustomerId(key.first), key.second, period_start, c.state.current, now));
    }
    std::vector<const UsageEventRecord*> appended;
    appended.reserve(events.size());
    for (const auto& e : events) appended.push_back(&e);
    return tx.usage().AppendEvents(appended);
}

Result<std::vector<MeterState>> UsageService::OverLimits(const CustomerId& customer, const PlanId& plan_id) {
    std::vector<MeterState> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        const Plan* plan = billing_.catalog().FindPlan(plan_id);
        if (plan == nullptr) return NotFound("no such plan: '" + plan_id.str() + "'", "plan");
        TALLY_ASSIGN_OR_RETURN(auto rec, tx.customers().Get(customer));
        if (!rec) return NotFound("no such customer: '" + customer.str() + "'", "id");
        TALLY_ASSIGN_OR_RETURN(CustomerView view, billing_.BuildView(tx, *rec, clock_.Now()));
        view.decision.plan = plan;  // the limits it would have
        TALLY_ASSIGN_OR_RETURN(auto overrides, tx.usage().ListOverrides(customer));
        for (const Meter& m : billing_.catalog().meters()) {
            TALLY_ASSIGN_OR_RETURN(MeterState state, Load(tx, view, m, std::nullopt, overrides));
            if (state.limit && state.current > *state.limit) out.push_back(std::move(state));
        }
        return {};
    }));
    return out;
}

Status UsageService::CheckSeat(StoreTx& tx, const CustomerId& customer) {
    for (const Meter& m : billing_.catalog().meters()) {
        if (!m.counts_members) continue;
        TALLY_ASSIGN_OR_RETURN(UsageOutcome o, Check(tx, customer, m.name, 1, false));
        if (!o.allowed) {
            return Error{ErrorCode::kConflict,
                         "the plan allows " + std::to_string(o.state.limit.value_or(0)) + " " + m.unit + " (" +
                             m.name + "); this organization has " + std::to_string(o.state.current) +
                             " members: upgrade, or remove a member first",
                         "user", ErrorReason::kUsageLimitExceeded};
        }
    }
    return {};
}

Result<bool> UsageService::CheckFeature(const CustomerId& customer, const std::string& feature) {
    TALLY_ASSIGN_OR_RETURN(CustomerView view, billing_.GetCustomer(customer));
    const Plan* plan = view.decision.plan;
    if (plan == nullptr) return false;
    auto it = plan->features.find(feature);
    if (it == plan->features.end()) return NotFound("no such feature: '" + feature + "'", "feature");
    return it->second;
}

Result<UsageSummary> UsageService::Summary(const CustomerId& customer) {
    std::optional<UsageSummary> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto rec, tx.customers().Get(customer));
        if (!rec) return NotFound("no such customer: '" + customer.str() + "'", "id");
        const Timestamp now = clock_.Now();
        TALLY_ASSIGN_OR_RETURN(CustomerView view, billing_.BuildView(tx, *rec, now));
        UsageSummary summary{view, {}};
        TALLY_ASSIGN_OR_RETURN(auto overrides, tx.usage().ListOverrides(customer));
        for (const Meter& m : billing_.catalog().meters()) {
            TALLY_ASSIGN_OR_RETURN(MeterState state, Load(tx, view, m, std::nullopt, overrides));
            summary.meters.push_back(std::move(state));
        }
        out = std::move(summary);
        return {};
    }));
    return std::move(*out);
}

Result<UsageHistory> UsageService::History(const CustomerId& customer, const std::string& meter_name,
                                           UsageGranularity granularity, std::optional<Timestamp> from,
                                           std::optional<Timestamp> to) {
    const Meter* meter = billing_.catalog().FindMeter(meter_name);
    if (meter == nullptr) return NotFound("no such meter: '" + meter_name + "'", "meter");
    const Timestamp now = clock_.Now();
    // By default the last 30 days or the last 12 months, up to now.
    const Timestamp end = to.value_or(now.PlusSeconds(1));
    const Timestamp start =
        from.value_or(granularity == UsageGranularity::kDay ? end.PlusSeconds(int64_t{-30} * 86400) : [&] {
            Timestamp t = UsagePeriod(end.PlusSeconds(-1), std::nullopt).start;
            for (int i = 0; i < 11; ++i) t = UsagePeriod(t.PlusSeconds(-1), std::nullopt).start;
            return t;
        }());
    if (start >= end) return InvalidArgument("from must be before to", "from");
    std::optional<UsageHistory> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto rec, tx.customers().Get(customer));
        if (!rec) return NotFound("no such customer: '" + customer.str() + "'", "id");
        // Whole buckets: from the start of the first day or month to the end of the last.
        const Timestamp first = UsagePeriod(start, std::nullopt).start;
        const Timestamp bucket_from = granularity == UsageGranularity::kDay
                                          ? Timestamp(start.unix_seconds() - start.unix_seconds() % 86400)
                                          : first;
        TALLY_ASSIGN_OR_RETURN(auto rows, tx.usage().DailyUsage(customer, meter_name, bucket_from,
                                                                Timestamp(end.unix_seconds() + int64_t{31} * 86400)));
        // A gauge's value carries over from before; a counter's is its sum over the buckets shown.
        int64_t before = 0;
        if (meter->kind == MeterKind::kGauge) {
            TALLY_ASSIGN_OR_RETURN(before, tx.usage().DeltaBefore(customer, meter_name, bucket_from));
        }
        std::vector<UsageDay> days;
        days.reserve(rows.size());
        for (const auto& r : rows) days.push_back(UsageDay{r.day, r.delta, r.events});
        TALLY_ASSIGN_OR_RETURN(auto buckets, BucketUsage(days, granularity, start, end, before));
        out = UsageHistory{*meter, granularity, std::move(buckets)};
        return {};
    }));
    return std::move(*out);
}

Result<LimitOverrideRecord> UsageService::SetOverride(StoreTx& tx, LimitOverrideRecord o) {
    if (billing_.catalog().FindMeter(o.meter) == nullptr) return NotFound("no such meter: '" + o.meter + "'", "meter");
    if (o.limit && (*o.limit < 0 || *o.limit > kUsageAmountMax)) {
        return InvalidArgument("limit must be between 0 and 2^53", "limit");
    }
    if (o.extra < 0 || o.extra > kUsageAmountMax) return InvalidArgument("extra must be between 0 and 2^53", "extra");
    if (!o.limit && o.extra == 0) return MissingArgument("give a limit, extra allowance, or both", "limit");
    if (IsBlank(o.reason)) return MissingArgument("reason is required", "reason");
    const Timestamp now = clock_.Now();
    if (o.expires_at && *o.expires_at <= now) return InvalidArgument("expires_at must be in the future", "expires_at");
    TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(o.customer_id));
    if (!customer) return NotFound("no such customer: '" + o.customer_id.str() + "'", "id");
    o.created = now;
    TALLY_TRY(tx.usage().PutOverride(o));
    std::string after = o.meter + ": ";
    after += o.limit ? "limit " + std::to_string(*o.limit) : std::string("plan limit");
    if (o.extra) after += " + " + std::to_string(o.extra);
    if (o.expires_at) after += " until " + FormatRfc3339(*o.expires_at);
    TALLY_TRY(tx.audit().Append({0, o.customer_id, now, "limit_override_set", "", after, o.actor, o.reason}));
    return o;
}

Result<LimitOverrideRecord> UsageService::ClearOverride(StoreTx& tx, const CustomerId& customer,
                                                        const std::string& meter, const std::string& actor) {
    TALLY_ASSIGN_OR_RETURN(auto all, tx.usage().ListOverrides(customer));
    for (const auto& o : all) {
        if (o.meter != meter) continue;
        TALLY_TRY(tx.usage().DeleteOverride(customer, meter));
        TALLY_TRY(tx.audit().Append({0, customer, clock_.Now(), "limit_override_cleared", o.meter, "", actor, ""}));
        return o;
    }
    return NotFound("customer '" + customer.str() + "' has no limit override for '" + meter + "'", "meter");
}

Result<std::vector<LimitOverrideRecord>> UsageService::ListOverrides(const CustomerId& customer) {
    std::vector<LimitOverrideRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto rec, tx.customers().Get(customer));
        if (!rec) return NotFound("no such customer: '" + customer.str() + "'", "id");
        TALLY_ASSIGN_OR_RETURN(out, tx.usage().ListOverrides(customer));
        return {};
    }));
    const Timestamp now = clock_.Now();
    std::erase_if(out, [&](const LimitOverrideRecord& o) { return o.expires_at && *o.expires_at <= now; });
    return out;
}

}  // namespace tally
