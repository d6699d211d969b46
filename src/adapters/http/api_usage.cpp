// Routes of usage limits: recording usage, checking a feature or an amount (and recording it atomically), and a
// customer's usage summary.
#include <boost/json.hpp>

#include <functional>

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

/// The key under which a usage event is deduplicated: the body's, scoped to the caller; the hash is the event's own
/// JSON, so the same event replays whether it came alone or in a batch.
IdempotencyRequest UsageIdempotency(const Call& c, const UsageItem& item, const bj::object& event) {
    return IdempotencyRequest{c.idem.api_key_id, "usage:" + item.key, Sha256Hex("usage\n" + bj::serialize(event))};
}

std::pair<StoredResponse, StoredResponse> UsageResponse(const UsageItem& item, const UsageOutcome& outcome) {
    bj::object out = OutcomeJson("usage_record", item.in.customer, outcome);
    out["action"] = item.in.set ? "set" : "increment";
    out["value"] = item.in.value;
    StoredResponse r = tally::http::Render(200, out);
    return {r, r};
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
    d.commits->Submit(GroupedWrite{{std::move(lock)},
                                   [&d, idem = std::move(idem), fn = std::move(fn), out](StoreTx& tx) -> Status {
                                       *out = d.idempotency.RunInTransaction(
                                           tx, idem,
                                           [&](StoreTx& t) -> Result<std::pair<StoredResponse, StoredResponse>> {
                                               TALLY_ASSIGN_OR_RETURN(StoredResponse r, fn(t));
                                               return std::make_pair(r, r);
                                           });
                                       if (!out->ok()) return out->error();
                                       return {};
                                   }},
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
    RunSerializedAndRespond(d, "usage:" + item->in.customer.str() + ":" + item->in.meter,
                            UsageIdempotency(c, *item, *body),
                            [&d, item = *item](StoreTx& tx) -> Result<StoredResponse> {
                                TALLY_ASSIGN_OR_RETURN(auto outcome, d.usage->Record(tx, item.in));
                                return UsageResponse(item, outcome).first;
                            },
                            respond);
}

Response RecordUsageBatch(const ApiDeps& d, const Call& c) {
    if (!d.usage) return RouteNotFound(c.req);
    auto body = BindJsonBody(c.req, {"events"}, kUsageBatchBodyBytesMax);
    if (!body.ok()) return Fail(body.error());
    const bj::value* events = body->if_contains("events");
    if (events == nullptr || events->is_null()) return Fail(MissingArgument("events is required", "events"));
    if (!events->is_array() || events->get_array().empty()) {
        return Fail(InvalidArgument("events must be a non-empty array of usage events", "events"));
    }
    const bj::array& list = events->get_array();
    if (list.size() > kUsageBatchEventsMax) {
        return Fail(InvalidArgument("at most " + std::to_string(kUsageBatchEventsMax) + " events per batch", "events"));
    }
    // One durable transaction for the batch; each event in a savepoint of its own, accepted or rejected alone.
    bj::array results;
    int64_t recorded = 0;
    int64_t replayed = 0;
    int64_t rejected = 0;
    Status s = d.store.Write([&](StoreTx& tx) -> Status {
        results.clear();
        recorded = replayed = rejected = 0;
        for (size_t i = 0; i < list.size(); ++i) {
            bj::object result{{"index", static_cast<int64_t>(i)}};
            const auto reject = [&](const Error& e) {
                Response r = ErrorResponse(e);
                result["status"] = "rejected";
                result["error"] = bj::parse(r.body).at("error");
                ++rejected;
            };
            if (!list[i].is_object()) {
                reject(InvalidArgument("each event must be an object", "events[" + std::to_string(i) + "]"));
                results.push_back(std::move(result));
                continue;
            }
            auto item = ParseUsageItem(list[i].get_object());
            if (!item.ok()) {
                reject(item.error());
                results.push_back(std::move(result));
                continue;
            }
            TALLY_TRY(tx.Savepoint());
            auto outcome = d.idempotency.RunInTransaction(
                tx, UsageIdempotency(c, *item, list[i].get_object()),
                [&](StoreTx& t) -> Result<std::pair<StoredResponse, StoredResponse>> {
                    TALLY_ASSIGN_OR_RETURN(auto o, d.usage->Record(t, item->in));
                    return UsageResponse(*item, o);
                });
            if (!outcome.ok()) {
                // Only this event's writes are undone; a store failure fails the whole batch (nothing acknowledged).
                TALLY_TRY(tx.RollbackToSavepoint());
                TALLY_TRY(tx.ReleaseSavepoint());
                if (outcome.error().code == ErrorCode::kUnavailable || outcome.error().code == ErrorCode::kInternal) {
                    return outcome.error();
                }
                reject(outcome.error());
            } else {
                TALLY_TRY(tx.ReleaseSavepoint());
                result["status"] = outcome->replayed ? "replayed" : "recorded";
                result["record"] = bj::parse(outcome->response.body);
                ++(outcome->replayed ? replayed : recorded);
            }
            results.push_back(std::move(result));
        }
        return {};
    });
    if (!s.ok()) return Fail(s.error());
    return Json(200, bj::object{{"object", "usage_batch"},
                                {"recorded", recorded},
                                {"replayed", replayed},
                                {"rejected", rejected},
                                {"data", std::move(results)}});
}

namespace {
Response CheckNow(const ApiDeps& d, const Call& c, std::optional<std::function<Result<StoredResponse>(StoreTx&)>>& recorded,
                  std::string& lock) {
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
    Response r = CheckNow(d, c, recorded, lock);
    if (!recorded) return respond(std::move(r));
    RunSerializedAndRespond(d, std::move(lock), c.idem, std::move(*recorded), respond);
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
