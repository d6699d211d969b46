// Subscription schedules: a subscription's planned changes as phases (Stripe's /v1/subscription_schedules).
// The sandbox's subset: create `from_subscription`, update the phases (the current phase as it is, later phases
// with one item each), release, cancel, and the clock running a phase change at a period boundary.
// Source: https://docs.stripe.com/billing/subscriptions/subscription-schedules and the API reference for
// subscription_schedules (create, update, release, cancel).
#include "domain/time.hpp"
#include "sandbox/sandbox.hpp"
#include "sandbox/sandbox_util.hpp"

namespace tally::sandbox {

using namespace detail;  // NOLINT(google-build-using-namespace): the sandbox's own helpers

namespace {

bj::object& FirstItem(bj::object& s) { return s.at("items").at("data").as_array()[0].as_object(); }

std::optional<BillingInterval> PriceInterval(const bj::object& price) {
    const auto* recurring = price.if_contains("recurring");
    if (recurring == nullptr || !recurring->is_object()) return std::nullopt;
    auto unit = ParseIntervalUnit(recurring->get_object().at("interval").as_string());
    if (!unit.ok()) return std::nullopt;
    return BillingInterval{*unit, I64(recurring->get_object().at("interval_count"))};
}

bool IsOpen(const bj::object& schedule) {
    const std::string status = Str(schedule, "status");
    return status == "active" || status == "not_started";
}

/// The phase of |schedule| starting at |at|, or nullptr.
const bj::object* PhaseStartingAt(const bj::object& schedule, int64_t at) {
    for (const auto& p : schedule.at("phases").as_array()) {
        if (I64(p.at("start_date")) == at) return &p.get_object();
    }
    return nullptr;
}

/// Stripe's refusal to |verb| a schedule that is no longer open.
http::Response NotOpen(const bj::object& schedule, const std::string& verb) {
    std::string message = "You cannot ";
    message += verb;
    message += " a subscription schedule that is currently in the `";
    message += Str(schedule, "status");
    message += "` status.";
    return StripeError(400, "invalid_request_error", "", message);
}

bj::object Phase(int64_t start, int64_t end, const std::string& price, int64_t quantity, const std::string& currency,
                 const std::string& proration_behavior) {
    return bj::object{{"start_date", start},
                      {"end_date", end},
                      {"currency", currency},
                      {"items", bj::array{bj::object{{"price", price}, {"quantity", quantity}, {"metadata", bj::object()}}}},
                      {"proration_behavior", proration_behavior},
                      {"billing_cycle_anchor", nullptr},
                      {"trial_end", nullptr},
                      {"metadata", bj::object()}};
}

}  // namespace

http::Response Sandbox::CreateSubscriptionSchedule(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"from_subscription", "metadata", "customer", "phases", "start_date",
                                        "end_behavior"})) {
        return *bad;
    }
    const std::string sub_id = Str(params, "from_subscription");
    if (sub_id.empty()) {
        return Invalid("from_subscription", "The sandbox creates subscription schedules from_subscription only; "
                                            "create the subscription first.");
    }
    for (const char* key : {"customer", "phases", "start_date", "end_behavior"}) {
        if (Has(params, key)) {
            return Invalid(key, std::string("You cannot set `") + key + "` if `from_subscription` is set.");
        }
    }
    bj::object* s = Find("subscription", sub_id);
    if (s == nullptr) {
        return StripeError(400, "invalid_request_error", "resource_missing", "No such subscription: '" + sub_id + "'",
                           "from_subscription");
    }
    const std::string status = Str(*s, "status");
    if (status == "canceled" || status == "incomplete_expired") {
        return Invalid("from_subscription", "You cannot migrate a canceled subscription to a subscription schedule.");
    }
    if (s->at("schedule").is_string()) {
        return Invalid("from_subscription", "You cannot migrate a subscription that is already attached to a "
                                            "schedule: `" + Str(*s, "schedule") + "`.");
    }
    const int64_t now = NowFor(Str(*s, "customer"));
    const bj::object& item = FirstItem(*s);
    const int64_t start = I64(item.at("current_period_start"));
    const int64_t end = I64(item.at("current_period_end"));
    const std::string id = NewId("sub_sched");
    bj::object schedule{
        {"id", id},
        {"object", "subscription_schedule"},
        {"application", nullptr},
        {"canceled_at", nullptr},
        {"completed_at", nullptr},
        {"created", now},
        {"current_phase", bj::object{{"start_date", start}, {"end_date", end}}},
        {"customer", s->at("customer")},
        {"default_settings", bj::object{{"collection_method", "charge_automatically"}}},
        {"end_behavior", "release"},
        {"livemode", false},
        {"metadata", bj::object()},
        {"phases", bj::array{Phase(start, end, Str(item.at("price").as_object(), "id"), I64(item.at("quantity")),
                                   Str(*s, "currency"), "create_prorations")}},
        {"released_at", nullptr},
        {"released_subscription", nullptr},
        {"status", "active"},
        {"subscription", sub_id},
        {"test_clock", s->at("test_clock")}};
    if (auto bad = MergeMetadata(schedule, params)) return *bad;
    Put("subscription_schedule", schedule);
    bj::object previous{{"schedule", nullptr}};
    (*s)["schedule"] = id;
    Emit("subscription_schedule.created", objects_.at(id), nullptr, now);
    Emit("customer.subscription.updated", *s, &previous, now);
    return Json(200, objects_.at(id));
}

http::Response Sandbox::UpdateSubscriptionSchedule(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"phases", "end_behavior", "proration_behavior", "metadata"})) return *bad;
    bj::object* schedule = Find("subscription_schedule", id);
    if (schedule == nullptr) return NoSuch("subscription_schedule", id);
    if (!IsOpen(*schedule)) {
        return NotOpen(*schedule, "update");
    }
    bj::object* s = Find("subscription", Str(*schedule, "subscription"));
    const std::string end_behavior = Has(params, "end_behavior") ? Str(params, "end_behavior") : Str(*schedule, "end_behavior");
    if (end_behavior != "release" && end_behavior != "cancel") {
        return Invalid("end_behavior", "Invalid end_behavior: must be one of release or cancel");
    }
    const std::string proration_behavior =
        Has(params, "proration_behavior") ? Str(params, "proration_behavior") : "create_prorations";
    if (proration_behavior != "create_prorations" && proration_behavior != "always_invoice" && proration_behavior != "none") {
        return Invalid("proration_behavior", "Invalid proration_behavior: must be one of create_prorations, "
                                             "always_invoice or none");
    }
    bj::array phases = schedule->at("phases").as_array();
    if (const auto* given = params.if_contains("phases")) {
        if (!given->is_array() || given->get_array().empty()) return Invalid("phases", "phases must be a non-empty array");
        const bj::object& current = schedule->at("current_phase").as_object();
        const bj::object& item = FirstItem(*s);
        phases.clear();
        int64_t start = I64(current.at("start_date"));
        size_t i = 0;
        for (const auto& pv : given->get_array()) {
            const std::string at = "phases[" + std::to_string(i) + "]";
            if (!pv.is_object()) return Invalid(at, "Each phase must be an object");
            const bj::object& p = pv.get_object();
            if (auto bad = OnlyParams(p, {"items", "start_date", "end_date", "iterations", "proration_behavior",
                                           "metadata"})) {
                return *bad;
            }
            if (Has(p, "start_date") && Int(Str(p, "start_date")) != start) {
                return Invalid(at + "[start_date]",
                               i == 0 ? "You can not modify the start date of the current phase."
                                      : "Each phase must start when the previous phase ends.");
            }
            const auto* items = p.if_contains("items");
            if (items == nullptr || !items->is_array() || items->get_array().size() != 1 ||
                !items->get_array()[0].is_object()) {
                return Invalid(at + "[items]", "The sandbox supports exactly one item per phase (items[0][price]).");
            }
            const bj::object& ip = items->get_array()[0].get_object();
            const std::string price_id = Str(ip, "price");
            const bj::object* price = Find("price", price_id);
            if (price == nullptr) return Invalid(at + "[items][0][price]", "No such price: '" + price_id + "'");
            const auto interval = PriceInterval(*price);
            if (!interval) {
                return Invalid(at + "[items][0][price]", "The price specified is set to `type=one_time` but this field "
                                                         "only accepts prices with `type=recurring`.");
            }
            if (Str(*price, "currency") != Str(*s, "currency")) {
                return Invalid(at + "[items][0][price]", "All phases must use the subscription's currency (" +
                                                             Str(*s, "currency") + ").");
            }
            int64_t quantity = 1;
            if (Has(ip, "quantity")) {
                const auto q = Int(Str(ip, "quantity"));
                if (!q || *q < 1) return Invalid(at + "[items][0][quantity]", "Invalid integer: " + Str(ip, "quantity"));
                quantity = *q;
            }
            if (i == 0 && (price_id != Str(item.at("price").as_object(), "id") || quantity != I64(item.at("quantity")))) {
                return Invalid(at + "[items]", "The sandbox keeps the current phase as the subscription is: change "
                                               "the subscription itself, or schedule the change in a later phase.");
            }
            int64_t end = 0;
            if (Has(p, "end_date") && Has(p, "iterations")) {
                return Invalid(at + "[iterations]", "You may only specify one of `end_date` and `iterations`.");
            }
            if (Has(p, "end_date")) {
                const auto e = Int(Str(p, "end_date"));
                if (!e || *e <= start) return Invalid(at + "[end_date]", "The phase must end after it starts.");
                end = *e;
            } else {
                const auto n = Has(p, "iterations") ? Int(Str(p, "iterations")) : std::optional<int64_t>(1);
                if (!n || *n < 1) return Invalid(at + "[iterations]", "iterations must be a positive integer");
                auto boundary = NthBoundary(Timestamp(start), *interval, *n);
                if (!boundary.ok()) return Invalid(at + "[iterations]", boundary.error().message);
                end = boundary->unix_seconds();
            }
            const std::string phase_proration =
                Has(p, "proration_behavior") ? Str(p, "proration_behavior") : proration_behavior;
            phases.push_back(Phase(start, end, price_id, quantity, Str(*s, "currency"), phase_proration));
            start = end;
            ++i;
        }
    }
    bj::object previous;
    if (phases != schedule->at("phases").as_array()) previous["phases"] = schedule->at("phases");
    if (end_behavior != Str(*schedule, "end_behavior")) previous["end_behavior"] = schedule->at("end_behavior");
    const bj::object metadata_before = schedule->at("metadata").as_object();
    if (auto bad = MergeMetadata(*schedule, params)) return *bad;
    if (schedule->at("metadata").as_object() != metadata_before) previous["metadata"] = metadata_before;
    (*schedule)["phases"] = std::move(phases);
    (*schedule)["end_behavior"] = end_behavior;
    if (!previous.empty()) Emit("subscription_schedule.updated", *schedule, &previous, NowFor(Str(*schedule, "customer")));
    return Json(200, *schedule);
}

http::Response Sandbox::ReleaseSubscriptionSchedule(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"preserve_cancel_date"})) return *bad;
    bj::object* schedule = Find("subscription_schedule", id);
    if (schedule == nullptr) return NoSuch("subscription_schedule", id);
    if (!IsOpen(*schedule)) {
        return NotOpen(*schedule, "release");
    }
    const int64_t now = NowFor(Str(*schedule, "customer"));
    const std::string sub_id = Str(*schedule, "subscription");
    bj::object previous{{"status", schedule->at("status")}, {"subscription", sub_id}};
    (*schedule)["status"] = "released";
    (*schedule)["released_at"] = now;
    (*schedule)["released_subscription"] = sub_id;
    (*schedule)["subscription"] = nullptr;
    (*schedule)["current_phase"] = nullptr;
    Emit("subscription_schedule.released", *schedule, &previous, now);
    if (bj::object* s = Find("subscription", sub_id)) {
        bj::object sub_previous{{"schedule", id}};
        (*s)["schedule"] = nullptr;
        Emit("customer.subscription.updated", *s, &sub_previous, now);
    }
    return Json(200, *schedule);
}

http::Response Sandbox::CancelSubscriptionSchedule(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"invoice_now", "prorate"})) return *bad;
    bj::object* schedule = Find("subscription_schedule", id);
    if (schedule == nullptr) return NoSuch("subscription_schedule", id);
    if (!IsOpen(*schedule)) {
        return NotOpen(*schedule, "cancel");
    }
    const int64_t now = NowFor(Str(*schedule, "customer"));
    bj::object previous{{"status", schedule->at("status")}};
    (*schedule)["status"] = "canceled";
    (*schedule)["canceled_at"] = now;
    (*schedule)["current_phase"] = nullptr;
    Emit("subscription_schedule.canceled", *schedule, &previous, now);
    // Stripe: canceling a schedule cancels its subscription at once.
    if (bj::object* s = Find("subscription", Str(*schedule, "subscription")); s && Str(*s, "status") != "canceled") {
        EndSubscription(*s, now, "cancellation_requested");
    }
    return Json(200, *schedule);
}

void Sandbox::StartSchedulePhase(bj::object& s, int64_t at) {
    if (!s.at("schedule").is_string()) return;
    bj::object* schedule = Find("subscription_schedule", Str(s, "schedule"));
    if (schedule == nullptr || !IsOpen(*schedule)) return;
    const bj::object* phase = PhaseStartingAt(*schedule, at);
    if (phase == nullptr) {
        // Inside a phase (one of several periods): nothing changes yet.
        const bj::array& phases = schedule->at("phases").as_array();
        if (!phases.empty() && at < I64(phases.back().at("end_date"))) return;
        // The last phase ended: the schedule completes and, with end_behavior release, lets the subscription go on
        // as it is (cancel: the caller's renewal is replaced by the end of the subscription).
        const std::string sub_id = Str(s, "id");
        bj::object previous{{"status", schedule->at("status")}};
        (*schedule)["status"] = "completed";
        (*schedule)["completed_at"] = at;
        (*schedule)["current_phase"] = nullptr;
        (*schedule)["released_subscription"] = sub_id;
        if (Str(*schedule, "end_behavior") == "cancel") {
            s["cancel_at_period_end"] = true;  // the period-end transition then ends the subscription
        }
        Emit("subscription_schedule.completed", *schedule, &previous, at);
        s["schedule"] = nullptr;
        return;
    }
    const bj::object& pi = phase->at("items").as_array()[0].as_object();
    const bj::object* price = Find("price", Str(pi, "price"));
    if (price == nullptr) return;
    bj::object& item = FirstItem(s);
    const auto old_interval = PriceInterval(item.at("price").as_object());
    const auto new_interval = PriceInterval(*price);
    item["price"] = *price;
    item["quantity"] = pi.at("quantity");
    // A phase that changes the interval starts a new billing cycle at its start (Stripe resets the anchor).
    if (old_interval && new_interval && !(*old_interval == *new_interval)) s["billing_cycle_anchor"] = at;
    bj::object previous{{"current_phase", schedule->at("current_phase")}};
    (*schedule)["current_phase"] = bj::object{{"start_date", phase->at("start_date")}, {"end_date", phase->at("end_date")}};
    Emit("subscription_schedule.updated", *schedule, &previous, at);
}

}  // namespace tally::sandbox
