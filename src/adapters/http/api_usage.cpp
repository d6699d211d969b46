// Routes of usage limits: recording usage, checking a feature or an amount (and recording it atomically), and a
// customer's usage summary.
#include <boost/json.hpp>

#include <algorithm>
#include <functional>
#include <memory>

#include "adapters/config/json_util.hpp"
#include "adapters/crypto.hpp"
#include "adapters/http/api_routes.hpp"
#include "adapters/http/json_views.hpp"

namespace tally::http::routes {
namespace {

namespace bj = boost::json;

Response Fail(const Error& e) { return ErrorResponse(e); }

/// An integer field that must be present; kInvalidArgument naming it otherwise.
Result<int64_t> RequiredInteger(const bj::object& body, const char* key) {
    const bj::value* v = body.if_contains(key);
    if (v == nullptr || v->is_null()) return MissingArgument(std::string(key) + " is required", key);
    if (!v->is_int64()) return InvalidArgument(std::string(key) + " must be an integer", key);
    return v->get_int64();
}

bj::object OutcomeJson(const char* object, const CustomerId& customer, const UsageOutcome& o) {
    bj::object out = MeterStateJson(o.state).as_object();
    out["object"] = object;
    out["customer"] = customer.str();
    out["allowed"] = o.allowed;
    out["reason"] = o.reason.empty() ? bj::value(nullptr) : bj::value(o.reason);
    out["recorded"] = o.recorded;
    return out;
}

}  // namespace

namespace {
/// One usage event's fields ({customer, meter, value, action?, idempotency_key, timestamp?}) and its key.
struct UsageItem {
    UsageInput in;
    std::string key;
};
Result<UsageItem> ParseUsageItem(const bj::object& body) {
    static const char* const kAllowed[] = {"customer", "meter", "value", "action", "idempotency_key", "timestamp"};
    for (const auto& kv : body) {
        bool known = false;
        for (const char* k : kAllowed) known = known || kv.key() == k;
        if (!known) {
            return WithReason(InvalidArgument("Received unknown parameter: " + std::string(kv.key()), std::string(kv.key())),
                              ErrorReason::kParameterUnknown);
        }
    }
    UsageItem item;
    TALLY_ASSIGN_OR_RETURN(std::string customer, json::RequiredString(body, "customer", ""));
    item.in.customer = CustomerId(customer);
    TALLY_ASSIGN_OR_RETURN(item.in.meter, json::RequiredString(body, "meter", ""));
    TALLY_ASSIGN_OR_RETURN(item.in.value, RequiredInteger(body, "value"));
    TALLY_ASSIGN_OR_RETURN(std::string action, json::OptionalString(body, "action", ""));
    if (!action.empty() && action != "increment" && action != "set") {
        return InvalidArgument("action must be increment or set", "action");
    }
    item.in.set = action == "set";
    TALLY_ASSIGN_OR_RETURN(item.key, json::RequiredString(body, "idempotency_key", ""));
    if (item.key.empty() || item.key.size() > kIdempotencyKeyBytesMax) {
        return InvalidArgument("idempotency_key must be 1 to " + std::to_string(kIdempotencyKeyBytesMax) + " characters",
                               "idempotency_key");
    }
    TALLY_ASSIGN_OR_RETURN(auto at, json::OptionalInt(body, "timestamp", ""));
    if (at) item.in.at = Timestamp(*at);
    return item;
}

/// The digest usage events' keys were stored with before events carried them (UsageLegacyKey): the event's JSON.
std::string LegacyUsageHash(const bj::object& event) { return Sha256Hex("usage\n" + bj::serialize(event)); }

/// Events parsed from one request, owned until the write that records them has run (it may run after the handler
/// returned, and more than once).
struct UsageRequest {
    std::string api_key_id;
    bj::value body;                      // the request's JSON, for the legacy digests
    std::vector<const bj::object*> json; // each valid event's JSON, in |events| order
    std::vector<UsageEventInput> events;
};

/// What RunUsageEvents hands back once the write is durable: the results, and the request, so that the caller can
/// free it (a batch's parsed JSON is thousands of allocations) on its own thread rather than the committer's.
using UsageDone = std::function<void(Result<std::vector<UsageEventResult>>, std::shared_ptr<UsageRequest>)>;

/// Records |req|'s events in one write (grouped with others' when there is a group committer) and hands |done|
/// the results once durable. Writers of one customer's meter queue for it on every node (Store::WriteSerialized).
void RunUsageEvents(const ApiDeps& d, std::shared_ptr<UsageRequest> req, UsageDone done) {
    std::vector<std::string> locks;
    locks.reserve(req->events.size());
    for (const auto& e : req->events) locks.push_back("usage:" + e.in.customer.str() + ":" + e.in.meter);
    std::sort(locks.begin(), locks.end());
    locks.erase(std::unique(locks.begin(), locks.end()), locks.end());
    // A batch over many meters does not queue on each (on PostgreSQL a lock each would crowd the server's shared
    // lock table, max_locks_per_transaction x max_connections): its serializable transaction still guards it, at
    // the cost of a retry when a concurrent writer of one of its meters wins.
    if (locks.size() > kUsageBatchSerializedMetersMax) locks.clear();
    auto out = std::make_shared<Result<std::vector<UsageEventResult>>>(Internal("the write did not run"));
    // |req| is kept alive by the completion below, which the committer calls after every run of the write.
    const UsageRequest* request = req.get();
    auto run = [&d, request, out](StoreTx& tx) -> Status {
        *out = d.usage->RecordEvents(tx, request->api_key_id, request->events,
                                     [request](size_t i) { return LegacyUsageHash(*request->json[i]); });
        if (!out->ok()) return out->error();
        return {};
    };
    if (d.commits == nullptr) {
        Status s = d.store.WriteSerialized(locks, run);
        return done(s.ok() ? std::move(*out) : Result<std::vector<UsageEventResult>>(s.error()), std::move(req));
    }
    // RecordEvents refuses events before it writes (an error of its own is a store failure): no savepoint needed.
    d.commits->Submit(GroupedWrite{std::move(locks), std::move(run), false},
                      [out, req = std::move(req), done = std::move(done)](Result<GroupedWriteOutcome> r) mutable {
                          if (!r.ok()) return done(r.error(), std::move(req));
                          if (!r->status.ok()) return done(r->status.error(), std::move(req));
                          done(std::move(*out), std::move(req));
                      });
}

/// RunInStore inside Store::WriteSerialized(|lock|).
Result<IdempotentOutcome> RunSerialized(const ApiDeps& d, const std::string& lock, const IdempotencyRequest& idem,
                                        const std::function<Result<StoredResponse>(StoreTx&)>& fn) {
    IdempotentOutcome out;
    TALLY_TRY(d.store.WriteSerialized(lock, [&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, d.idempotency.RunInTransaction(
                                        tx, idem, [&](StoreTx& t) -> Result<std::pair<StoredResponse, StoredResponse>> {
                                            TALLY_ASSIGN_OR_RETURN(StoredResponse r, fn(t));
                                            return std::make_pair(r, r);
                                        }));
        return {};
    }));
    return out;
}

/// RunSerialized, answered through |respond|: with a group committer, once the group holding this write is
/// durable (the caller's thread goes back to other requests meanwhile); else at once. |fn| is kept until then, so
/// it must own what it uses.
void RunSerializedAndRespond(const ApiDeps& d, std::string lock, IdempotencyRequest idem,
                             std::function<Result<StoredResponse>(StoreTx&)> fn, const Responder& respond) {
    if (d.commits == nullptr) return respond(Stored(RunSerialized(d, lock, idem, fn)));
    auto out = std::make_shared<Result<IdempotentOutcome>>(Internal("the write did not run"));
    // The check refuses (an unknown customer or meter, a reused key) before it writes, and a refusal is its answer,
    // not the group's: no savepoint needed; only a store failure fails the group.
    d.commits->Submit(GroupedWrite{{std::move(lock)},
                                   [&d, idem = std::move(idem), fn = std::move(fn), out](StoreTx& tx) -> Status {
                                       *out = d.idempotency.RunInTransaction(
                                           tx, idem,
                                           [&](StoreTx& t) -> Result<std::pair<StoredResponse, StoredResponse>> {
                                               TALLY_ASSIGN_OR_RETURN(StoredResponse r, fn(t));
                                               return std::make_pair(r, r);
                                           });
                                       if (!out->ok() && IsStoreFailure(out->error())) return out->error();
                                       return {};
                                   },
                                   false},
                      [out, respond](Result<GroupedWriteOutcome> r) {
                          if (!r.ok()) return respond(Fail(r.error()));
                          if (!r->status.ok()) return respond(Fail(r->status.error()));
                          respond(Stored(*out));
                      });
}
}  // namespace

void RecordUsage(const ApiDeps& d, const Call& c, const Responder& respond) {
    if (!d.usage) return respond(RouteNotFound(c.req));
    auto body = BindJsonBody(c.req, {"customer", "meter", "value", "action", "idempotency_key", "timestamp"});
    if (!body.ok()) return respond(Fail(body.error()));
    auto item = ParseUsageItem(*body);
    if (!item.ok()) return respond(Fail(item.error()));
    // Deduplicated in the transaction that records: a replay gets the first answer; the same key with another
    // event is refused.
    auto req = std::make_shared<UsageRequest>();
    req->api_key_id = c.idem.api_key_id;
    req->body = std::move(*body);
    req->json.push_back(&req->body.as_object());
    req->events.push_back(UsageEventInput{std::move(item->in), std::move(item->key)});
    RunUsageEvents(d, std::move(req), [respond](Result<std::vector<UsageEventResult>> r,
                                                const std::shared_ptr<UsageRequest>&) {
        if (!r.ok()) return respond(Fail(r.error()));
        const UsageEventResult& e = r->front();
        if (e.status == UsageEventResult::Status::kRejected) return respond(Fail(*e.error));
        Response resp = e.legacy_response ? Response{200, *e.legacy_response, "application/json", {}}
                                          : Json(200, UsageRecordJson(e.record, e.meter));
        if (e.status == UsageEventResult::Status::kReplayed) resp.headers.emplace_back("Idempotent-Replayed", "true");
        respond(std::move(resp));
    });
}

void RecordUsageBatch(const ApiDeps& d, const Call& c, const Responder& respond) {
    if (!d.usage) return respond(RouteNotFound(c.req));
    auto body = BindJsonBody(c.req, {"events"}, kUsageBatchBodyBytesMax);
    if (!body.ok()) return respond(Fail(body.error()));
    auto req = std::make_shared<UsageRequest>();
    req->api_key_id = c.idem.api_key_id;
    req->body = std::move(*body);
    const bj::value* events = req->body.as_object().if_contains("events");
    if (events == nullptr || events->is_null()) return respond(Fail(MissingArgument("events is required", "events")));
    if (!events->is_array() || events->get_array().empty()) {
        return respond(Fail(InvalidArgument("events must be a non-empty array of usage events", "events")));
    }
    const bj::array& list = events->get_array();
    if (list.size() > kUsageBatchEventsMax) {
        return respond(
            Fail(InvalidArgument("at most " + std::to_string(kUsageBatchEventsMax) + " events per batch", "events")));
    }
    // Each event accepted or rejected on its own: the malformed ones here, the others by RecordEvents, all in one
    // durable transaction.
    auto parse_errors = std::make_shared<std::vector<std::optional<Error>>>(list.size());
    req->events.reserve(list.size());
    for (size_t i = 0; i < list.size(); ++i) {
        if (!list[i].is_object()) {
            (*parse_errors)[i] = InvalidArgument("each event must be an object", "events[" + std::to_string(i) + "]");
            continue;
        }
        auto item = ParseUsageItem(list[i].get_object());
        if (!item.ok()) {
            (*parse_errors)[i] = item.error();
            continue;
        }
        req->json.push_back(&list[i].get_object());
        req->events.push_back(UsageEventInput{std::move(item->in), std::move(item->key)});
    }
    const auto render = [parse_errors](const std::vector<UsageEventResult>& results) -> std::string {
        int64_t recorded = 0, replayed = 0, rejected = 0;
        const auto error_json = [](const Error& e) { return bj::parse(ErrorResponse(e).body).at("error"); };
        bj::array data;
        data.reserve(parse_errors->size());
        size_t next = 0;  // the next of |results|, in request order
        for (size_t i = 0; i < parse_errors->size(); ++i) {
            bj::object item{{"index", static_cast<int64_t>(i)}};
            if ((*parse_errors)[i]) {
                item["status"] = "rejected";
                item["error"] = error_json(*(*parse_errors)[i]);
                ++rejected;
            } else {
                const UsageEventResult& r = results[next++];
                if (r.status == UsageEventResult::Status::kRejected) {
                    item["status"] = "rejected";
                    item["error"] = error_json(*r.error);
                    ++rejected;
                } else {
                    const bool again = r.status == UsageEventResult::Status::kReplayed;
                    item["status"] = again ? "replayed" : "recorded";
                    item["record"] = r.legacy_response ? bj::parse(*r.legacy_response) : UsageRecordJson(r.record, r.meter);
                    ++(again ? replayed : recorded);
                }
            }
            data.push_back(std::move(item));
        }
        return bj::serialize(bj::object{{"object", "usage_batch"},
                                        {"recorded", recorded},
                                        {"replayed", replayed},
                                        {"rejected", rejected},
                                        {"data", std::move(data)}});
    };
    if (req->events.empty()) return respond(Response{200, render({}), "application/json", {}, nullptr});
    RunUsageEvents(d, std::move(req), [render, respond](Result<std::vector<UsageEventResult>> r,
                                                        std::shared_ptr<UsageRequest> owned) {
        // A store failure fails the whole batch: nothing of it is acknowledged.
        if (!r.ok()) return respond(Fail(r.error()));
        // Rendered, and the request and results freed, by the connection's thread, not the committer's.
        auto results = std::make_shared<std::vector<UsageEventResult>>(std::move(*r));
        respond(Response{200, "", "application/json", {},
                         [render, results, owned = std::move(owned)] { return render(*results); }});
    });
}

namespace {
Response CheckNow(const ApiDeps& d, const Call& c, std::optional<std::function<Result<StoredResponse>(StoreTx&)>>& recorded,
                  std::string& lock, std::shared_ptr<PendingCheck>& pending) {
    if (!d.usage) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"customer", "feature", "meter", "flag", "amount", "record"});
    if (!body.ok()) return Fail(body.error());
    auto customer = json::RequiredString(*body, "customer", "");
    if (!customer.ok()) return Fail(customer.error());
    const CustomerId id(*customer);
    const bool has_feature = body->contains("feature") && !body->at("feature").is_null();
    const bool has_meter = body->contains("meter") && !body->at("meter").is_null();
    const bool has_flag = body->contains("flag") && !body->at("flag").is_null();
    if (int{has_feature} + int{has_meter} + int{has_flag} != 1) {
        return Fail(InvalidArgument("give one of feature, meter (with amount) or flag",
                                    has_flag ? "flag" : has_meter ? "meter" : "feature"));
    }
    if (has_flag) {
        if (body->contains("amount") || body->contains("record")) {
            return Fail(InvalidArgument("amount and record apply to a meter check", body->contains("amount") ? "amount"
                                                                                                               : "record"));
        }
        auto flag = json::RequiredString(*body, "flag", "");
        if (!flag.ok()) return Fail(flag.error());
        return CheckFlag(d, id, *flag);
    }
    if (has_feature) {
        if (body->contains("amount") || body->contains("record")) {
            return Fail(InvalidArgument("amount and record apply to a meter check", body->contains("amount") ? "amount"
                                                                                                               : "record"));
        }
        auto feature = json::RequiredString(*body, "feature", "");
        if (!feature.ok()) return Fail(feature.error());
        auto allowed = d.usage->CheckFeature(id, *feature);
        if (!allowed.ok()) return Fail(allowed.error());
        return Json(200, bj::object{{"object", "feature_check"}, {"customer", id.str()}, {"feature", *feature},
                                    {"allowed", *allowed}, {"reason", *allowed ? bj::value(nullptr) : bj::value("not_in_plan")}});
    }
    auto meter = json::RequiredString(*body, "meter", "");
    if (!meter.ok()) return Fail(meter.error());
    auto amount = json::OptionalInt(*body, "amount", "");
    if (!amount.ok()) return Fail(amount.error());
    auto record = json::OptionalBool(*body, "record", "", false);
    if (!record.ok()) return Fail(record.error());
    const int64_t n = amount->value_or(1);
    if (!*record) {
        std::optional<UsageOutcome> outcome;
        Status s = d.store.Read([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(outcome, d.usage->Check(tx, id, *meter, n, false));
            return {};
        });
        if (!s.ok()) return Fail(s.error());
        return Json(200, OutcomeJson("usage_check", id, *outcome));
    }
    // The check and the increment in one write transaction: concurrent callers cannot both take the last unit.
    // Callers of one customer's meter queue for it (on every node) instead of failing each other's transactions.
    lock = "usage:" + id.str() + ":" + *meter;
    pending = std::make_shared<PendingCheck>();
    pending->customer = id;
    pending->meter = *meter;
    pending->amount = n;
    recorded = [&d, id, meter = *meter, n](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto outcome, d.usage->Check(tx, id, meter, n, true));
        return tally::http::Render(200, OutcomeJson("usage_check", id, outcome));
    };
    return Response{};
}
}  // namespace

void CheckUsage(const ApiDeps& d, const Call& c, const Responder& respond) {
    std::optional<std::function<Result<StoredResponse>(StoreTx&)>> recorded;
    std::string lock;
    std::shared_ptr<PendingCheck> pending;
    Response r = CheckNow(d, c, recorded, lock, pending);
    if (!recorded) return respond(std::move(r));
    if (d.commits == nullptr || !c.idem.key.empty()) {
        // With an Idempotency-Key the answer is stored with the key, in the same transaction.
        return RunSerializedAndRespond(d, std::move(lock), c.idem, std::move(*recorded), respond);
    }
    // The group's recorded checks run as one batch (UsageService::CheckBatch).
    GroupedWrite write{{std::move(lock)}, nullptr};
    write.batch = &d.usage->checks();
    write.item = pending;
    d.commits->Submit(std::move(write), [pending, respond](Result<GroupedWriteOutcome> w) {
        if (!w.ok()) return respond(Fail(w.error()));
        if (!w->status.ok()) return respond(Fail(w->status.error()));
        respond(Json(200, OutcomeJson("usage_check", pending->customer, **pending->out)));
    });
}

Response GetUsage(const ApiDeps& d, const Call& c) {
    if (!d.usage) return RouteNotFound(c.req);
    auto summary = d.usage->Summary(CustomerId(c.param(0)));
    if (!summary.ok()) return Fail(summary.error());
    bj::array meters;
    for (const auto& m : summary->meters) meters.push_back(MeterStateJson(m));
    const CustomerView& v = summary->customer;
    return Json(200, bj::object{{"object", "usage_summary"},
                                {"customer", v.customer.id.str()},
                                {"plan", v.decision.plan ? bj::value(v.decision.plan->id.str()) : bj::value(nullptr)},
                                {"subscription", v.primary ? bj::value(v.primary->id.str()) : bj::value(nullptr)},
                                {"meters", std::move(meters)}});
}

Response GetUsageHistory(const ApiDeps& d, const Call& c) {
    if (!d.usage) return RouteNotFound(c.req);
    if (Status s = OnlyQueryParams(c.req, {"meter", "granularity", "from", "to"}); !s.ok()) return Fail(s.error());
    auto meter = c.req.query.find("meter");
    if (meter == c.req.query.end() || meter->second.empty()) return Fail(MissingArgument("meter is required", "meter"));
    UsageGranularity granularity = UsageGranularity::kDay;
    if (auto it = c.req.query.find("granularity"); it != c.req.query.end()) {
        auto g = ParseUsageGranularity(it->second);
        if (!g.ok()) return Fail(g.error());
        granularity = *g;
    }
    std::optional<Timestamp> from, to;
    for (auto [name, target] : {std::pair{"from", &from}, std::pair{"to", &to}}) {
        auto v = IntQuery(c.req, name);
        if (!v.ok()) return Fail(v.error());
        if (*v) {
            if (Status s = CheckTimestampRange(Timestamp(**v), name); !s.ok()) return Fail(s.error());
            *target = Timestamp(**v);
        }
    }
    auto history = d.usage->History(CustomerId(c.param(0)), meter->second, granularity, from, to);
    if (!history.ok()) return Fail(history.error());
    bj::array data;
    const bool gauge = history->meter.kind == MeterKind::kGauge;
    for (const auto& b : history->buckets) {
        data.push_back(bj::object{{"start", b.period.start.unix_seconds()},
                                  {"end", b.period.end.unix_seconds()},
                                  {"usage", b.usage},
                                  {"value", gauge ? bj::value(b.value) : bj::value(nullptr)},
                                  {"events", b.events}});
    }
    return Json(200, bj::object{{"object", "usage_history"},
                                {"customer", c.param(0)},
                                {"meter", history->meter.name},
                                {"kind", MeterKindName(history->meter.kind)},
                                {"unit", history->meter.unit},
                                {"granularity", granularity == UsageGranularity::kDay ? "day" : "month"},
                                {"data", std::move(data)}});
}

Response ListLimitOverrides(const ApiDeps& d, const Call& c) {
    if (!d.usage) return RouteNotFound(c.req);
    auto list = d.usage->ListOverrides(CustomerId(c.param(0)));
    if (!list.ok()) return Fail(list.error());
    bj::array data;
    for (const auto& o : *list) data.push_back(LimitOverrideJson(o));
    return List(data, "/v1/customers/" + c.param(0) + "/limit_overrides");
}

Response SetLimitOverride(const ApiDeps& d, const Call& c) {
    if (!d.usage) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"meter", "limit", "extra", "expires_at", "reason"});
    if (!body.ok()) return Fail(body.error());
    LimitOverrideRecord o;
    o.customer_id = CustomerId(c.param(0));
    o.actor = c.actor;
    auto meter = json::RequiredString(*body, "meter", "");
    if (!meter.ok()) return Fail(meter.error());
    o.meter = *meter;
    auto limit = json::OptionalInt(*body, "limit", "");
    if (!limit.ok()) return Fail(limit.error());
    o.limit = *limit;
    auto extra = json::OptionalInt(*body, "extra", "");
    if (!extra.ok()) return Fail(extra.error());
    o.extra = extra->value_or(0);
    auto expires = json::OptionalInt(*body, "expires_at", "");
    if (!expires.ok()) return Fail(expires.error());
    if (*expires) o.expires_at = Timestamp(**expires);
    auto reason = json::RequiredString(*body, "reason", "");
    if (!reason.ok()) return Fail(reason.error());
    o.reason = *reason;
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto saved, d.usage->SetOverride(tx, o));
        return tally::http::Render(200, LimitOverrideJson(saved));
    }));
}

Response ClearLimitOverride(const ApiDeps& d, const Call& c) {
    if (!d.usage) return RouteNotFound(c.req);
    return Stored(d.idempotency.RunInStore(c.idem, [&](StoreTx& tx) -> Result<StoredResponse> {
        TALLY_ASSIGN_OR_RETURN(auto removed, d.usage->ClearOverride(tx, CustomerId(c.param(0)), c.param(1), c.actor));
        bj::value v = LimitOverrideJson(removed);
        v.as_object()["deleted"] = true;
        return tally::http::Render(200, v);
    }));
}

}  // namespace tally::http::routes
