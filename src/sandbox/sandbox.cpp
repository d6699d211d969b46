#include "sandbox/sandbox.hpp"

#include <curl/curl.h>

#include <algorithm>

#include "adapters/crypto.hpp"
#include "sandbox/fixtures.hpp"
#include "sandbox/sandbox_util.hpp"
#include "adapters/stripe/form_encoding.hpp"
#include "adapters/stripe/webhook_signature.hpp"

namespace tally::sandbox {

using namespace detail;  // NOLINT(google-build-using-namespace): the sandbox's own helpers

Sandbox::Sandbox(SandboxConfig config) : config_(std::move(config)), id_rng_(config_.id_seed.value_or(0)) {
    if (!config_.now) {
        config_.now = [] {
            return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        };
    }
    fixtures_ = bj::parse(StripeFixturesJson()).at("resources").as_object();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    delivery_thread_ = std::thread([this] { DeliveryLoop(); });
    if (config_.wall_clock_tick_ms > 0) clock_thread_ = std::thread([this] { WallClockLoop(); });
}

Sandbox::~Sandbox() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
        delivery_cv_.notify_all();
    }
    delivery_thread_.join();
    if (clock_thread_.joinable()) clock_thread_.join();
}

void Sandbox::WallClockLoop() {
    std::unique_lock lock(mu_);
    while (!delivery_cv_.wait_for(lock, std::chrono::milliseconds(config_.wall_clock_tick_ms),
                                  [this] { return stopping_; })) {
        // Subscriptions of customers without a test clock live in real time, as on Stripe.
        const int64_t now = config_.now();
        for (const auto& id : std::vector<std::string>(order_["subscription"])) {
            const bj::object& s = objects_.at(id);
            if (!s.at("test_clock").is_null()) continue;
            if (auto due = NextTransition(s); due && due->at <= now) RunDueTransitions(id, now);
        }
    }
}

void Sandbox::SetPublicUrl(std::string url) {
    std::lock_guard lock(mu_);
    config_.public_url = std::move(url);
}

std::vector<std::string> Sandbox::TakeEvents() {
    std::lock_guard lock(mu_);
    std::vector<std::string> out;
    out.swap(taken_events_);
    return out;
}

std::vector<Delivery> Sandbox::deliveries() const {
    std::lock_guard lock(mu_);
    return deliveries_;
}

std::string Sandbox::NewId(const std::string& prefix) { return prefix + "_" + Hex(12); }

std::string Sandbox::Hex(size_t bytes) {
    if (!config_.id_seed) return RandomHex(bytes);
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(bytes * 2);
    uint64_t word = 0;
    for (size_t i = 0; i < bytes; ++i) {
        if (i % 8 == 0) word = id_rng_();
        const auto byte = static_cast<unsigned>(word & 0xffU);
        word >>= 8;
        out.push_back(kDigits[byte >> 4]);
        out.push_back(kDigits[byte & 0xfU]);
    }
    return out;
}

bj::object Sandbox::Template(const char* resource) const { return fixtures_.at(resource).as_object(); }

const bj::object& Sandbox::LineTemplate() const {
    return fixtures_.at("invoice").at("lines").at("data").as_array()[0].as_object();
}

void Sandbox::Put(const std::string& type, bj::object object) {
    const std::string id(object.at("id").as_string());
    if (!objects_.count(id)) order_[type].push_back(id);
    objects_[id] = std::move(object);
}

bj::object* Sandbox::Find(const std::string& type, const std::string& id) {
    auto it = objects_.find(id);
    if (it == objects_.end() || Str(it->second, "object") != type) return nullptr;
    return &it->second;
}

void Sandbox::Emit(const std::string& type, const bj::object& object, const bj::object* previous_attributes,
                   std::optional<int64_t> created) {
    bj::object event = Template("event");
    const std::string id = NewId("evt");
    bj::object data{{"object", object}};
    if (previous_attributes != nullptr) data["previous_attributes"] = *previous_attributes;
    int endpoints = 0;
    for (const auto& we_id : order_["webhook_endpoint"]) {
        const bj::object& we = objects_.at(we_id);
        bool enabled = false;
        for (const auto& e : we.at("enabled_events").as_array()) {
            enabled = enabled || e.as_string() == "*" || e.as_string() == type;
        }
        if (!enabled || Str(we, "status") != "enabled") continue;
        ++endpoints;
        pending_.push_back(Pending{id, we_id, 1, std::chrono::steady_clock::now()});
    }
    event["id"] = id;
    event["type"] = type;
    event["created"] = created.value_or(config_.now());
    event["api_version"] = kApiVersion;
    event["livemode"] = false;
    event["data"] = std::move(data);
    event["pending_webhooks"] = endpoints;
    event["request"] = bj::object{
        {"id", current_request_id_.empty() ? bj::value(nullptr) : bj::value(current_request_id_)},
        {"idempotency_key", current_idempotency_key_.empty() ? bj::value(nullptr) : bj::value(current_idempotency_key_)}};
    if (!config_.retain_events) {
        taken_events_.push_back(bj::serialize(event));
        if (endpoints == 0) return;
    }
    Put("event", std::move(event));
    if (endpoints > 0) delivery_cv_.notify_all();
}

http::Response Sandbox::Handle(const http::Request& req) {
    if (req.path.rfind("/v1/", 0) != 0) return HostedPage(req);  // hosted pages take no API key
    // Authentication as Stripe: a secret test key as Bearer, or as the Basic-auth user (curl -u sk_test_...:).
    std::string auth = req.Header("authorization");
    if (auth.rfind("Basic ", 0) == 0) {
        const auto decoded = Base64Decode(std::string_view(auth).substr(6));
        auth = decoded ? "Bearer " + decoded->substr(0, decoded->find(':')) : std::string("Bearer ?");
    }
    if (auth.empty()) {
        return StripeError(401, "invalid_request_error", "",
                           "You did not provide an API key. You need to provide your API key in the Authorization "
                           "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').");
    }
    if (auth.rfind("Bearer sk_test_", 0) != 0) {
        return StripeError(401, "invalid_request_error", "api_key_invalid",
                           "Invalid API Key provided: the sandbox accepts secret test keys (sk_test_...) only.");
    }
    auto params = req.method == "POST" ? stripe::DecodeForm(req.body) : [&]() -> Result<bj::object> {
        const size_t q = req.target.find('?');
        return stripe::DecodeForm(q == std::string::npos ? std::string_view() : std::string_view(req.target).substr(q + 1));
    }();
    if (!params.ok()) return Invalid(params.error().param, params.error().message);
    if (auto bad = CheckTypedParams(*params)) return *bad;
    params->erase("expand");  // accepted; objects are returned unexpanded (ids), as without expand

    std::lock_guard lock(mu_);
    current_request_id_ = "req_" + Hex(7);
    current_idempotency_key_.clear();
    const std::string idem = req.Header("idempotency-key");
    std::string request_hash;
    if (req.method == "POST" && !idem.empty()) {
        if (idem.size() > kIdempotencyKeyBytesMax) {
            return Invalid("Idempotency-Key", "Idempotency keys must be at most 255 characters.");
        }
        request_hash = Sha256Hex(req.method + " " + req.path + "\n" + bj::serialize(*params));
        if (auto it = idempotency_.find(idem); it != idempotency_.end()) {
            if (it->second.request_hash != request_hash) {
                return StripeError(400, "idempotency_error", "",
                                   "Keys for idempotent requests can only be used with the same parameters they were "
                                   "first used with. Try using a key other than '" + idem +
                                       "' if you meant to execute a different request.");
            }
            http::Response replay = it->second.response;
            replay.headers.emplace_back("Idempotent-Replayed", "true");
            return replay;
        }
        current_idempotency_key_ = idem;
    }
    http::Response r = Route(req, *params);
    r.headers.emplace_back("Request-Id", current_request_id_);
    r.headers.emplace_back("Stripe-Version", kApiVersion);
    if (!request_hash.empty() && (r.status < 400 || r.status == 402)) {
        // Stripe keeps results of requests that started executing; validation errors are not saved.
        idempotency_[idem] = IdempotentResult{request_hash, r};
    }
    return r;
}

namespace {

// Parameter names Stripe types as booleans, integers and enums, wherever they appear (top level or nested, as in
// items[0][quantity] or subscription_data[trial_period_days]).
constexpr std::string_view kBooleanParams[] = {"active", "allow_promotion_codes", "cancel_at_period_end", "confirm",
                                               "invoice_now", "off_session", "pending", "prorate",
                                               "transfer_lookup_key"};
constexpr std::string_view kIntegerParams[] = {"amount", "unit_amount", "quantity", "limit", "trial_period_days",
                                               "proration_date", "frozen_time", "interval_count", "exp_month",
                                               "exp_year", "resumes_at", "expires_at"};
struct EnumParam {
    std::string_view name;
    std::vector<std::string_view> values;
};
const std::vector<EnumParam>& EnumParams() {
    static const std::vector<EnumParam> kEnums = {
        {"proration_behavior", {"create_prorations", "none", "always_invoice"}},
        {"payment_behavior", {"allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete"}},
        {"collection_method", {"charge_automatically", "send_invoice"}},
        {"mode", {"payment", "setup", "subscription"}},
        {"interval", {"day", "week", "month", "year"}},
        {"capture_method", {"automatic", "automatic_async", "manual"}},
        {"missing_payment_method", {"cancel", "create_invoice", "pause"}},
    };
    return kEnums;
}

bool Contains(const std::string_view* begin, const std::string_view* end, std::string_view key) {
    return std::find(begin, end, key) != end;
}

std::optional<http::Response> CheckTyped(bj::value& v, std::string_view key, const std::string& path) {
    if (key == "metadata") return std::nullopt;  // free-form strings, whatever their keys are called
    if (v.is_object()) {
        for (auto& kv : v.get_object()) {
            if (auto bad = CheckTyped(kv.value(), kv.key(), path + "[" + std::string(kv.key()) + "]")) return bad;
        }
        return std::nullopt;
    }
    if (v.is_array()) {
        auto& a = v.get_array();
        for (size_t i = 0; i < a.size(); ++i) {
            if (auto bad = CheckTyped(a[i], key, path + "[" + std::to_string(i) + "]")) return bad;
        }
        return std::nullopt;
    }
    if (!v.is_string()) return std::nullopt;
    std::string text(v.get_string());
    if (Contains(std::begin(kBooleanParams), std::end(kBooleanParams), key)) {
        std::string lower = text;
        for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (lower != "true" && lower != "false") return Invalid(path, "Invalid boolean: " + text);
        v = bj::string(lower);
        return std::nullopt;
    }
    if (Contains(std::begin(kIntegerParams), std::end(kIntegerParams), key)) {
        if (!Int(text)) return Invalid(path, "Invalid integer: " + text);
        return std::nullopt;
    }
    if (key == "trial_end" && text != "now" && !Int(text)) {
        return Invalid(path, "Invalid trial_end: must be an integer Unix timestamp or 'now'");
    }
    for (const auto& e : EnumParams()) {
        if (e.name != key) continue;
        if (std::find(e.values.begin(), e.values.end(), text) != e.values.end()) return std::nullopt;
        std::string list;
        for (size_t i = 0; i < e.values.size(); ++i) {
            list += (i == 0 ? "" : i + 1 == e.values.size() ? ", or " : ", ") + std::string(e.values[i]);
        }
        return Invalid(path, "Invalid " + std::string(key) + ": must be one of " + list);
    }
    return std::nullopt;
}

}  // namespace

std::optional<http::Response> detail::CheckTypedParams(bj::object& params) {
    for (auto& kv : params) {
        if (auto bad = CheckTyped(kv.value(), kv.key(), std::string(kv.key()))) return bad;
    }
    return std::nullopt;
}

http::Response Sandbox::Route(const http::Request& req, const bj::object& params) {
    const std::vector<std::string> seg = http::PathSegments(req.path);
    const std::string& m = req.method;
    auto not_found = [&] {
        return StripeError(404, "invalid_request_error", "",
                           "Unrecognized request URL (" + m + ": " + req.path + "). The sandbox implements a subset of "
                           "Stripe's API; see src/sandbox/README.md.");
    };
    if (seg.size() < 2 || seg[0] != "v1") return not_found();
    const std::string& res = seg[1];
    static const std::map<std::string, std::string> kTypes = {
        {"customers", "customer"},          {"products", "product"},
        {"prices", "price"},                {"events", "event"},
        {"webhook_endpoints", "webhook_endpoint"}, {"subscriptions", "subscription"},
        {"invoices", "invoice"},            {"payment_methods", "payment_method"},
        {"payment_intents", "payment_intent"}, {"charges", "charge"},
        {"refunds", "refund"},              {"invoiceitems", "invoiceitem"},
        {"subscription_schedules", "subscription_schedule"}};
    if (res == "test_helpers" && seg.size() == 3 && seg[2] == "webhook_deliveries" && m == "GET") {
        bj::array data;
        for (const auto& d : deliveries_) {
            data.push_back(bj::object{{"event", d.event_id}, {"webhook_endpoint", d.endpoint_id}, {"url", d.url},
                                      {"attempt", d.attempt}, {"status", d.http_status}, {"error", d.error},
                                      {"created", d.at}});
        }
        return Json(200, bj::object{{"object", "list"}, {"data", std::move(data)}, {"has_more", false},
                                    {"url", "/v1/test_helpers/webhook_deliveries"}});
    }
    if (res == "test_helpers" && seg.size() >= 3 && seg[2] == "test_clocks") {
        if (seg.size() == 3 && m == "POST") return CreateTestClock(params);
        if (seg.size() == 3 && m == "GET") return List("test_helpers.test_clock", params, "/v1/test_helpers/test_clocks");
        if (seg.size() == 4 && m == "GET") return Retrieve("test_helpers.test_clock", seg[3]);
        if (seg.size() == 5 && seg[4] == "advance" && m == "POST") return AdvanceTestClock(seg[3], params);
        return not_found();
    }
    if (res == "checkout" && seg.size() >= 3 && seg[2] == "sessions") {
        if (seg.size() == 3 && m == "POST") return CreateCheckoutSession(params);
        if (seg.size() == 3 && m == "GET") return List("checkout.session", params, "/v1/checkout/sessions");
        if (seg.size() == 4 && m == "GET") return Retrieve("checkout.session", seg[3]);
        if (seg.size() == 5 && seg[4] == "expire" && m == "POST") return ExpireCheckoutSession(seg[3]);
        return not_found();
    }
    if (res == "billing_portal" && seg.size() == 3 && seg[2] == "sessions" && m == "POST") {
        return CreatePortalSession(params);
    }
    if (res == "subscription_items") {
        if (seg.size() == 2 && m == "GET") return ListSubscriptionItems(params);
        if (seg.size() == 3 && m == "GET") return RetrieveSubscriptionItem(seg[2]);
        if (seg.size() == 3 && m == "POST") return UpdateSubscriptionItem(seg[2], params);
        return not_found();
    }
    auto type_it = kTypes.find(res);
    if (type_it == kTypes.end()) return not_found();
    const std::string& type = type_it->second;
    if (seg.size() == 2 && m == "GET") return List(type, params, "/v1/" + res);
    if (seg.size() == 2 && m == "POST") {
        if (type == "customer") return CreateCustomer(params);
        if (type == "product") return CreateProduct(params);
        if (type == "price") return CreatePrice(params);
        if (type == "webhook_endpoint") return CreateWebhookEndpoint(params);
        if (type == "subscription") return CreateSubscription(params);
        if (type == "subscription_schedule") return CreateSubscriptionSchedule(params);
        if (type == "payment_method") return CreatePaymentMethod(params);
        if (type == "payment_intent") return CreatePaymentIntent(params);
        if (type == "refund") return CreateRefund(params);
    }
    if (seg.size() == 3 && m == "POST" && type == "invoice" && seg[2] == "create_preview") return CreatePreviewInvoice(params);
    if (seg.size() == 3 && m == "GET" && type == "payment_method") {
        // Stripe's test tokens (pm_card_visa, ...) can be retrieved: each retrieval makes a fresh payment method.
        const bj::object* pm = ResolvePaymentMethod(seg[2]);
        return pm ? Json(200, *pm) : NoSuch("PaymentMethod", seg[2]);
    }
    if (seg.size() == 3 && m == "GET") return Retrieve(type, seg[2]);
    if (seg.size() == 3 && m == "POST" && type == "customer") return UpdateCustomer(seg[2], params);
    if (seg.size() == 3 && m == "POST" && type == "product") return UpdateProduct(seg[2], params);
    if (seg.size() == 3 && m == "POST" && type == "price") return UpdatePrice(seg[2], params);
    if (seg.size() == 3 && m == "POST" && type == "subscription") return UpdateSubscription(seg[2], params);
    if (seg.size() == 3 && m == "POST" && type == "subscription_schedule") return UpdateSubscriptionSchedule(seg[2], params);
    if (seg.size() == 3 && m == "DELETE" && type == "subscription") return CancelSubscription(seg[2], params);
    if (seg.size() == 3 && m == "DELETE" && (type == "customer" || type == "webhook_endpoint" || type == "product")) {
        return DeleteObject(type, seg[2]);
    }
    if (seg.size() == 4 && m == "POST") {
        const std::string& id = seg[2];
        const std::string& action = seg[3];
        if (type == "payment_method" && action == "attach") return AttachPaymentMethod(id, params);
        if (type == "payment_method" && action == "detach") return DetachPaymentMethod(id);
        if (type == "payment_intent" && action == "confirm") return ConfirmPaymentIntent(id, params);
        if (type == "payment_intent" && action == "cancel") return CancelPaymentIntent(id);
        if (type == "invoice" && action == "pay") return PayInvoiceRequest(id, params);
        if (type == "subscription" && action == "resume") return ResumeSubscription(id, params);
        if (type == "subscription_schedule" && action == "release") return ReleaseSubscriptionSchedule(id, params);
        if (type == "subscription_schedule" && action == "cancel") return CancelSubscriptionSchedule(id, params);
    }
    if (seg.size() == 4 && m == "GET" && type == "customer" && seg[3] == "payment_methods") {
        if (Find("customer", seg[2]) == nullptr) return NoSuch("customer", seg[2]);
        bj::object filtered = params;
        filtered["customer"] = seg[2];
        return List("payment_method", filtered, "/v1/customers/" + seg[2] + "/payment_methods");
    }
    return not_found();
}

http::Response Sandbox::Retrieve(const std::string& type, const std::string& id) {
    const bj::object* o = Find(type, id);
    if (o == nullptr) {
        return NoSuch(type, id);
    }
    bj::object out = Public(*o);
    if (type == "webhook_endpoint") out["secret"] = nullptr;  // Stripe shows the secret only at creation
    return Json(200, out);
}

http::Response Sandbox::List(const std::string& type, const bj::object& params, const std::string& url) {
    if (auto bad = OnlyParams(params, {"limit", "starting_after", "ending_before", "email", "lookup_keys", "product",
                                        "active", "type", "currency", "customer", "status", "subscription",
                                        "payment_intent", "charge", "pending"})) {
        return *bad;
    }
    int limit = kListLimitDefault;
    if (Has(params, "limit")) {
        const auto n = Int(Str(params, "limit"));
        if (!n || *n < 1 || *n > kListLimitMax) return Invalid("limit", "limit must be an integer between 1 and 100");
        limit = static_cast<int>(*n);
    }
    // Newest first, as Stripe lists.
    std::vector<const bj::object*> all;
    const auto& ids = order_[type];
    for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
        const bj::object& o = objects_.at(*it);
        if (o.contains("deleted") && o.at("deleted").is_bool() && o.at("deleted").get_bool()) continue;
        if (Has(params, "email") && Str(o, "email") != Str(params, "email")) continue;
        if (Has(params, "product") && Str(o, "product") != Str(params, "product")) continue;
        if (Has(params, "type") && Str(o, "type") != Str(params, "type")) continue;
        if (Has(params, "customer") && Str(o, "customer") != Str(params, "customer")) continue;
        if (Has(params, "subscription") && InvoiceSubscriptionId(o) != Str(params, "subscription")) continue;
        if (type == "subscription") {
            const std::string status = Str(params, "status");
            if (status.empty() ? Str(o, "status") == "canceled" : (status != "all" && Str(o, "status") != status)) continue;
        }
        if (Has(params, "currency") && Str(o, "currency") != Str(params, "currency")) continue;
        if (Has(params, "payment_intent") && Str(o, "payment_intent") != Str(params, "payment_intent")) continue;
        if (Has(params, "charge") && Str(o, "charge") != Str(params, "charge")) continue;
        if (Has(params, "pending") && (Str(params, "pending") == "true") != o.at("invoice").is_null()) continue;
        if (type == "payment_method" && !Has(params, "customer") && !o.at("customer").is_string()) continue;
        if (Has(params, "active") && o.contains("active") && (Str(params, "active") == "true") != o.at("active").as_bool()) {
            continue;
        }
        if (const auto* keys = params.if_contains("lookup_keys")) {
            if (!keys->is_array()) return Invalid("lookup_keys", "lookup_keys must be an array");
            const std::string key = Str(o, "lookup_key");
            bool match = false;
            for (const auto& k : keys->get_array()) match = match || (k.is_string() && k.get_string() == key);
            if (!match || key.empty()) continue;
        }
        all.push_back(&o);
    }
    size_t begin = 0;
    size_t end = all.size();
    if (const std::string after = Str(params, "starting_after"); !after.empty()) {
        auto it = std::find_if(all.begin(), all.end(), [&](const bj::object* o) { return Str(*o, "id") == after; });
        if (it == all.end()) return Invalid("starting_after", "No such object: '" + after + "'");
        begin = static_cast<size_t>(it - all.begin()) + 1;
    }
    if (const std::string before = Str(params, "ending_before"); !before.empty()) {
        auto it = std::find_if(all.begin(), all.end(), [&](const bj::object* o) { return Str(*o, "id") == before; });
        if (it == all.end()) return Invalid("ending_before", "No such object: '" + before + "'");
        end = static_cast<size_t>(it - all.begin());
        begin = end > static_cast<size_t>(limit) ? end - static_cast<size_t>(limit) : 0;
    }
    bj::array data;
    for (size_t i = begin; i < end && data.size() < static_cast<size_t>(limit); ++i) {
        bj::object o = *all[i];
        if (type == "webhook_endpoint") o["secret"] = nullptr;
        data.push_back(Public(o));
    }
    const bool has_more = Has(params, "ending_before") ? begin > 0 : begin + data.size() < end;
    return Json(200, bj::object{{"object", "list"}, {"data", std::move(data)}, {"has_more", has_more}, {"url", url}});
}

http::Response Sandbox::DeleteObject(const std::string& type, const std::string& id) {
    bj::object* o = Find(type, id);
    if (o == nullptr) {
        return NoSuch(type, id);
    }
    if (type == "webhook_endpoint") o->at("status") = "disabled";
    (*o)["deleted"] = true;
    const bj::object deleted_shape{{"id", id}, {"object", type}, {"deleted", true}};
    if (type == "customer") Emit("customer.deleted", *o);
    if (type == "product") Emit("product.deleted", *o);
    return Json(200, deleted_shape);
}

void Sandbox::DeliveryLoop() {
    std::unique_lock lock(mu_);
    for (;;) {
        if (stopping_) return;
        auto now = std::chrono::steady_clock::now();
        auto due = std::find_if(pending_.begin(), pending_.end(), [now](const Pending& p) { return p.due <= now; });
        if (due == pending_.end()) {
            auto next = std::min_element(pending_.begin(), pending_.end(),
                                         [](const Pending& a, const Pending& b) { return a.due < b.due; });
            if (next == pending_.end()) {
                delivery_cv_.wait(lock);
            } else {
                delivery_cv_.wait_until(lock, next->due);
            }
            continue;
        }
        Pending p = *due;
        pending_.erase(due);
        lock.unlock();
        Deliver(p);
        lock.lock();
    }
}

void Sandbox::Deliver(const Pending& p) {
    std::string payload;
    std::string url;
    std::string secret;
    {
        std::lock_guard lock(mu_);
        const bj::object* event = Find("event", p.event_id);
        const bj::object* we = Find("webhook_endpoint", p.endpoint_id);
        if (event == nullptr || we == nullptr || Str(*we, "status") != "enabled") return;
        payload = bj::serialize(*event);
        url = Str(*we, "url");
        secret = Str(*we, "secret");
    }
    const std::string header = "Stripe-Signature: " + StripeWebhookVerifier::SignHeader(secret, payload, config_.now());
    std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
    curl_slist* headers = nullptr;
    headers = curl_slist_append(headers, "Content-Type: application/json; charset=utf-8");
    headers = curl_slist_append(headers, header.c_str());
    headers = curl_slist_append(headers, "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)");
    headers = curl_slist_append(headers, "Expect:");
    std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> guard(headers, curl_slist_free_all);
    std::string body;
    curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, payload.c_str());
    curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(payload.size()));
    curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, WriteBody);
    curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(kDeliveryTimeoutMs));
    curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
    const CURLcode rc = curl_easy_perform(curl.get());
    long status = 0;
    if (rc == CURLE_OK) curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);

    std::lock_guard lock(mu_);
    deliveries_.push_back(Delivery{p.event_id, p.endpoint_id, url, p.attempt, static_cast<int>(status),
                                   rc == CURLE_OK ? "" : curl_easy_strerror(rc), config_.now()});
    const bool delivered = rc == CURLE_OK && status >= 200 && status < 300;
    if (bj::object* event = Find("event", p.event_id); event != nullptr && delivered) {
        (*event)["pending_webhooks"] = std::max<int64_t>(0, event->at("pending_webhooks").to_number<int64_t>() - 1);
    }
    if (!delivered && p.attempt < kDeliveryAttemptsMax && !stopping_) {
        const int64_t delay_ms = config_.delivery_retry_base_ms << std::min(p.attempt - 1, 20);
        pending_.push_back(Pending{p.event_id, p.endpoint_id, p.attempt + 1,
                                   std::chrono::steady_clock::now() + std::chrono::milliseconds(delay_ms)});
        delivery_cv_.notify_all();
    }
}

}  // namespace tally::sandbox
