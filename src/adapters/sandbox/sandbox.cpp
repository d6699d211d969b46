#include "adapters/sandbox/sandbox.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <charconv>

#include "adapters/crypto.hpp"
#include "adapters/sandbox/fixtures.hpp"
#include "adapters/stripe/form_encoding.hpp"
#include "adapters/stripe/webhook_signature.hpp"
#include "domain/money.hpp"
#include "domain/time.hpp"

namespace tally::sandbox {
namespace {

namespace bj = boost::json;

constexpr int64_t kSecondsPerDay = 86400;
constexpr int64_t kTrialWillEndNoticeSeconds = 3 * kSecondsPerDay;  // Stripe: three days before the trial ends
constexpr int64_t kTestClockLifetimeSeconds = 30 * kSecondsPerDay;  // test clocks are deleted after 30 days

http::Response Json(int status, const bj::value& v) { return http::Response{status, bj::serialize(v), "application/json", {}}; }

/// Stripe's error shape: {"error":{"type","code","message","param"}}.
http::Response StripeError(int status, const std::string& type, const std::string& code, const std::string& message,
                           const std::string& param = {}) {
    bj::object err{{"type", type}, {"message", message}};
    if (!code.empty()) err["code"] = code;
    if (!param.empty()) err["param"] = param;
    return Json(status, bj::object{{"error", std::move(err)}});
}

/// Stripe's 404 for an unknown id: "No such customer: 'cus_x'".
http::Response NoSuch(const std::string& type, const std::string& id) {
    return StripeError(404, "invalid_request_error", "resource_missing", "No such " + type + ": '" + id + "'", "id");
}

http::Response Missing(const std::string& param) {
    return StripeError(400, "invalid_request_error", "parameter_missing", "Missing required param: " + param + ".", param);
}

http::Response Invalid(const std::string& param, const std::string& message) {
    return StripeError(400, "invalid_request_error", "parameter_invalid", message, param);
}

/// Rejects parameters the endpoint does not know, as Stripe does.
std::optional<http::Response> OnlyParams(const bj::object& params, std::initializer_list<const char*> allowed) {
    for (const auto& kv : params) {
        bool known = false;
        for (const char* a : allowed) known = known || kv.key() == a;
        if (!known) {
            return StripeError(400, "invalid_request_error", "parameter_unknown",
                               "Received unknown parameter: " + std::string(kv.key()), std::string(kv.key()));
        }
    }
    return std::nullopt;
}

std::string Str(const bj::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

bool Has(const bj::object& o, const char* key) { return o.if_contains(key) != nullptr; }

/// The subscription an invoice bills (parent.subscription_details.subscription), or "".
std::string InvoiceSubscriptionId(const bj::object& invoice) {
    const auto* parent = invoice.if_contains("parent");
    if (parent == nullptr || !parent->is_object()) return {};
    const auto* details = parent->get_object().if_contains("subscription_details");
    return details && details->is_object() ? Str(details->get_object(), "subscription") : std::string();
}

std::optional<int64_t> Int(const std::string& s) {
    int64_t v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

/// Applies Stripe's metadata update rules: keys merge, an empty value deletes the key.
std::optional<http::Response> MergeMetadata(bj::object& object, const bj::object& params) {
    const auto* md = params.if_contains("metadata");
    if (md == nullptr) return std::nullopt;
    if (md->is_string() && md->get_string().empty()) {
        object["metadata"] = bj::object();
        return std::nullopt;
    }
    if (!md->is_object()) return Invalid("metadata", "Invalid object");
    bj::value& target = object["metadata"];
    if (!target.is_object()) target = bj::object();
    for (const auto& kv : md->get_object()) {
        if (!kv.value().is_string()) return Invalid("metadata", "Invalid value for metadata[" + std::string(kv.key()) + "]");
        if (kv.value().get_string().empty()) {
            target.get_object().erase(kv.key());
        } else {
            target.get_object()[kv.key()] = kv.value();
        }
    }
    return std::nullopt;
}

size_t WriteBody(char* data, size_t size, size_t count, void* user) {
    static_cast<std::string*>(user)->append(data, size * count);
    return size * count;
}

}  // namespace

Sandbox::Sandbox(SandboxConfig config) : config_(std::move(config)) {
    if (!config_.now) {
        config_.now = [] {
            return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
                .count();
        };
    }
    fixtures_ = bj::parse(StripeFixturesJson()).at("resources").as_object();
    curl_global_init(CURL_GLOBAL_DEFAULT);
    delivery_thread_ = std::thread([this] { DeliveryLoop(); });
}

Sandbox::~Sandbox() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
        delivery_cv_.notify_all();
    }
    delivery_thread_.join();
}

std::vector<Delivery> Sandbox::deliveries() const {
    std::lock_guard lock(mu_);
    return deliveries_;
}

std::string Sandbox::NewId(const std::string& prefix) { return prefix + "_" + RandomHex(12); }

bj::object Sandbox::Template(const char* resource) const { return fixtures_.at(resource).as_object(); }

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
    Put("event", std::move(event));
    if (endpoints > 0) delivery_cv_.notify_all();
}

http::Response Sandbox::Handle(const http::Request& req) {
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
    params->erase("expand");  // accepted; this slice returns objects unexpanded

    std::lock_guard lock(mu_);
    current_request_id_ = "req_" + RandomHex(7);
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

http::Response Sandbox::Route(const http::Request& req, const bj::object& params) {
    const std::vector<std::string> seg = http::PathSegments(req.path);
    const std::string& m = req.method;
    auto not_found = [&] {
        return StripeError(404, "invalid_request_error", "",
                           "Unrecognized request URL (" + m + ": " + req.path + "). The sandbox implements a subset of "
                           "Stripe's API; see src/adapters/sandbox/README.md.");
    };
    if (seg.size() < 2 || seg[0] != "v1") return not_found();
    const std::string& res = seg[1];
    static const std::map<std::string, std::string> kTypes = {
        {"customers", "customer"}, {"products", "product"}, {"prices", "price"},
        {"events", "event"},       {"webhook_endpoints", "webhook_endpoint"}, {"subscriptions", "subscription"},
        {"invoices", "invoice"}};
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
    }
    if (seg.size() == 3 && m == "GET") return Retrieve(type, seg[2]);
    if (seg.size() == 3 && m == "POST" && type == "customer") return UpdateCustomer(seg[2], params);
    if (seg.size() == 3 && m == "POST" && type == "subscription") return UpdateSubscription(seg[2], params);
    if (seg.size() == 3 && m == "DELETE" && type == "subscription") return CancelSubscription(seg[2]);
    if (seg.size() == 3 && m == "DELETE" && (type == "customer" || type == "webhook_endpoint" || type == "product")) {
        return DeleteObject(type, seg[2]);
    }
    return not_found();
}

http::Response Sandbox::Retrieve(const std::string& type, const std::string& id) {
    const bj::object* o = Find(type, id);
    if (o == nullptr) {
        return NoSuch(type, id);
    }
    bj::object out = *o;
    if (type == "webhook_endpoint") out["secret"] = nullptr;  // Stripe shows the secret only at creation
    return Json(200, out);
}

http::Response Sandbox::List(const std::string& type, const bj::object& params, const std::string& url) {
    if (auto bad = OnlyParams(params, {"limit", "starting_after", "ending_before", "email", "lookup_keys", "product",
                                        "active", "type", "currency", "customer", "status", "subscription"})) {
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
        data.push_back(std::move(o));
    }
    const bool has_more = Has(params, "ending_before") ? begin > 0 : begin + data.size() < end;
    return Json(200, bj::object{{"object", "list"}, {"data", std::move(data)}, {"has_more", has_more}, {"url", url}});
}

http::Response Sandbox::CreateCustomer(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"email", "name", "description", "phone", "metadata", "test_clock"})) return *bad;
    const std::string clock_id = Str(params, "test_clock");
    const bj::object* clock = clock_id.empty() ? nullptr : Find("test_helpers.test_clock", clock_id);
    if (!clock_id.empty() && clock == nullptr) return Invalid("test_clock", "No such test clock: '" + clock_id + "'");
    bj::object c = Template("customer");
    c["id"] = NewId("cus");
    c["created"] = clock ? clock->at("frozen_time").to_number<int64_t>() : config_.now();
    c["livemode"] = false;
    c["email"] = Has(params, "email") ? bj::value(Str(params, "email")) : nullptr;
    c["name"] = Has(params, "name") ? bj::value(Str(params, "name")) : nullptr;
    c["description"] = Has(params, "description") ? bj::value(Str(params, "description")) : nullptr;
    c["phone"] = Has(params, "phone") ? bj::value(Str(params, "phone")) : nullptr;
    c["test_clock"] = Has(params, "test_clock") ? bj::value(Str(params, "test_clock")) : nullptr;
    c["metadata"] = bj::object();
    c["discount"] = nullptr;
    c["address"] = nullptr;
    c["shipping"] = nullptr;
    c["balance"] = 0;
    c["delinquent"] = false;
    c["default_source"] = nullptr;
    c["currency"] = nullptr;
    c["invoice_prefix"] = RandomHex(4);
    if (auto bad = MergeMetadata(c, params)) return *bad;
    Put("customer", c);
    Emit("customer.created", c, nullptr, c.at("created").to_number<int64_t>());
    return Json(200, c);
}

http::Response Sandbox::UpdateCustomer(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"email", "name", "description", "phone", "metadata"})) return *bad;
    bj::object* c = Find("customer", id);
    if (c == nullptr) {
        return NoSuch("customer", id);
    }
    bj::object previous;
    for (const char* key : {"email", "name", "description", "phone"}) {
        if (!Has(params, key)) continue;
        const std::string v = Str(params, key);
        bj::value next = v.empty() ? bj::value(nullptr) : bj::value(v);  // an empty value clears the field
        if ((*c)[key] != next) {
            previous[key] = (*c)[key];
            (*c)[key] = std::move(next);
        }
    }
    const bj::value old_metadata = (*c)["metadata"];
    if (auto bad = MergeMetadata(*c, params)) return *bad;
    if ((*c)["metadata"] != old_metadata) previous["metadata"] = old_metadata;
    if (!previous.empty()) Emit("customer.updated", *c, &previous);
    return Json(200, *c);
}

http::Response Sandbox::CreateProduct(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"name", "description", "active", "metadata", "id"})) return *bad;
    if (Str(params, "name").empty()) return Missing("name");
    bj::object p = Template("product");
    const std::string id = Str(params, "id");
    if (!id.empty() && objects_.count(id)) {
        return StripeError(400, "invalid_request_error", "resource_already_exists", "Product already exists.", "id");
    }
    p["id"] = id.empty() ? NewId("prod") : id;
    p["name"] = Str(params, "name");
    p["description"] = Has(params, "description") ? bj::value(Str(params, "description")) : nullptr;
    p["active"] = Str(params, "active") != "false";
    p["created"] = config_.now();
    p["updated"] = config_.now();
    p["livemode"] = false;
    p["default_price"] = nullptr;
    p["images"] = bj::array();
    p["marketing_features"] = bj::array();
    p["metadata"] = bj::object();
    if (auto bad = MergeMetadata(p, params)) return *bad;
    Put("product", p);
    Emit("product.created", p);
    return Json(200, p);
}

http::Response Sandbox::CreatePrice(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"currency", "unit_amount", "product", "product_data", "recurring", "lookup_key",
                                        "transfer_lookup_key", "nickname", "metadata", "active"})) {
        return *bad;
    }
    if (!Has(params, "currency")) return Missing("currency");
    auto currency = Currency::Parse(Str(params, "currency"));
    if (!currency.ok()) return Invalid("currency", "Invalid currency: " + Str(params, "currency"));
    if (!Has(params, "unit_amount")) return Missing("unit_amount");
    const auto amount = Int(Str(params, "unit_amount"));
    if (!amount || *amount < 0) return Invalid("unit_amount", "Invalid integer: " + Str(params, "unit_amount"));
    std::string product = Str(params, "product");
    if (product.empty()) {
        const auto* pd = params.if_contains("product_data");
        if (pd == nullptr || !pd->is_object()) return Missing("product");
        auto created = CreateProduct(pd->get_object());
        if (created.status != 200) return created;
        product = std::string(bj::parse(created.body).at("id").as_string());
    } else if (Find("product", product) == nullptr) {
        return Invalid("product", "No such product: '" + product + "'");
    }
    bj::object p = Template("price");
    p["id"] = NewId("price");
    p["object"] = "price";
    p["active"] = Str(params, "active") != "false";
    p["currency"] = currency->code();
    p["unit_amount"] = *amount;
    p["unit_amount_decimal"] = std::to_string(*amount);
    p["product"] = product;
    p["created"] = config_.now();
    p["livemode"] = false;
    p["billing_scheme"] = "per_unit";
    p["tiers_mode"] = nullptr;
    p["transform_quantity"] = nullptr;
    p["custom_unit_amount"] = nullptr;
    p["nickname"] = Has(params, "nickname") ? bj::value(Str(params, "nickname")) : nullptr;
    p["metadata"] = bj::object();
    if (const auto* rec = params.if_contains("recurring")) {
        if (!rec->is_object()) return Invalid("recurring", "Invalid object");
        const std::string interval = Str(rec->get_object(), "interval");
        if (interval != "day" && interval != "week" && interval != "month" && interval != "year") {
            return interval.empty() ? Missing("recurring[interval]")
                                    : Invalid("recurring[interval]", "Invalid recurring[interval]: must be one of day, "
                                                                     "week, month, or year");
        }
        const std::string count_text = Str(rec->get_object(), "interval_count");
        const auto count = count_text.empty() ? std::optional<int64_t>(1) : Int(count_text);
        if (!count || *count < 1) return Invalid("recurring[interval_count]", "Invalid integer: " + count_text);
        p["type"] = "recurring";
        p["recurring"] = bj::object{{"interval", interval},       {"interval_count", *count}, {"meter", nullptr},
                                    {"trial_period_days", nullptr}, {"usage_type", "licensed"}};
    } else {
        p["type"] = "one_time";
        p["recurring"] = nullptr;
    }
    const std::string lookup_key = Str(params, "lookup_key");
    if (!lookup_key.empty()) {
        for (const auto& id : order_["price"]) {
            bj::object& other = objects_.at(id);
            if (Str(other, "lookup_key") != lookup_key) continue;
            if (Str(params, "transfer_lookup_key") != "true") {
                return Invalid("lookup_key", "A price (`" + id + "`) already uses that lookup key.");
            }
            bj::object previous{{"lookup_key", lookup_key}};
            other["lookup_key"] = nullptr;
            Emit("price.updated", other, &previous);
        }
    }
    p["lookup_key"] = lookup_key.empty() ? bj::value(nullptr) : bj::value(lookup_key);
    if (auto bad = MergeMetadata(p, params)) return *bad;
    Put("price", p);
    Emit("price.created", p);
    return Json(200, p);
}

http::Response Sandbox::CreateWebhookEndpoint(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"url", "enabled_events", "description", "metadata", "api_version"})) return *bad;
    const std::string url = Str(params, "url");
    if (url.empty()) return Missing("url");
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) return Invalid("url", "Invalid URL: " + url);
    const auto* events = params.if_contains("enabled_events");
    if (events == nullptr) return Missing("enabled_events");
    if (!events->is_array() || events->get_array().empty()) return Invalid("enabled_events", "Invalid array");
    bj::object we = Template("webhook_endpoint");
    we["id"] = NewId("we");
    we["url"] = url;
    we["enabled_events"] = *events;
    we["status"] = "enabled";
    we["secret"] = "whsec_" + RandomHex(16);
    we["created"] = config_.now();
    we["livemode"] = false;
    we["api_version"] = Has(params, "api_version") ? bj::value(Str(params, "api_version")) : bj::value(kApiVersion);
    we["description"] = Has(params, "description") ? bj::value(Str(params, "description")) : nullptr;
    we["application"] = nullptr;
    we["metadata"] = bj::object();
    if (auto bad = MergeMetadata(we, params)) return *bad;
    Put("webhook_endpoint", we);
    return Json(200, we);  // the only answer that shows the secret
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

http::Response Sandbox::CreateSubscription(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"customer", "items", "trial_period_days", "cancel_at_period_end", "metadata",
                                        "default_payment_method", "payment_behavior", "collection_method",
                                        "proration_behavior"})) {
        return *bad;
    }
    const std::string customer_id = Str(params, "customer");
    if (customer_id.empty()) return Missing("customer");
    const bj::object* customer = Find("customer", customer_id);
    if (customer == nullptr) return Invalid("customer", "No such customer: '" + customer_id + "'");
    const auto* items = params.if_contains("items");
    if (items == nullptr) return Missing("items");
    if (!items->is_array() || items->get_array().size() != 1 || !items->get_array()[0].is_object()) {
        return Invalid("items", "The sandbox supports exactly one subscription item (items[0][price]).");
    }
    const bj::object& item_params = items->get_array()[0].get_object();
    const std::string price_id = Str(item_params, "price");
    if (price_id.empty()) return Missing("items[0][price]");
    const bj::object* price = Find("price", price_id);
    if (price == nullptr) return Invalid("items[0][price]", "No such price: '" + price_id + "'");
    if (!price->at("recurring").is_object()) {
        return Invalid("items[0][price]", "The price specified is set to `type=one_time` but this field only accepts "
                                          "prices with `type=recurring`.");
    }
    const std::string quantity_text = Str(item_params, "quantity");
    const auto quantity = quantity_text.empty() ? std::optional<int64_t>(1) : Int(quantity_text);
    if (!quantity || *quantity < 1) return Invalid("items[0][quantity]", "Invalid integer: " + quantity_text);
    const bj::object& recurring = price->at("recurring").as_object();
    auto unit = ParseIntervalUnit(recurring.at("interval").as_string());
    const BillingInterval interval{*unit, recurring.at("interval_count").to_number<int64_t>()};

    const int64_t now = NowFor(customer_id);
    std::optional<int64_t> trial_end;
    if (Has(params, "trial_period_days")) {
        const auto days = Int(Str(params, "trial_period_days"));
        if (!days || *days < 0 || *days > 730) return Invalid("trial_period_days", "Invalid integer");
        if (*days > 0) trial_end = now + *days * kSecondsPerDay;
    }
    // During a trial the period is the trial; after it, periods follow the anchor (Stripe's month-end rule).
    const int64_t anchor = trial_end.value_or(now);
    const int64_t period_end = trial_end ? *trial_end : NthBoundary(Timestamp(now), interval, 1)->unix_seconds();

    const std::string id = NewId("sub");
    bj::object s = Template("subscription");
    bj::object item = s.at("items").at("data").as_array()[0].as_object();
    item["id"] = NewId("si");
    item["price"] = *price;
    item["plan"] = nullptr;
    item["quantity"] = *quantity;
    item["subscription"] = id;
    item["created"] = now;
    item["current_period_start"] = now;
    item["current_period_end"] = period_end;
    item["metadata"] = bj::object();
    item["discounts"] = bj::array();
    item["tax_rates"] = bj::array();
    item["billing_thresholds"] = nullptr;
    s["id"] = id;
    s["customer"] = customer_id;
    s["status"] = trial_end ? "trialing" : "active";
    s["items"] = bj::object{{"object", "list"}, {"data", bj::array{item}}, {"has_more", false},
                            {"url", "/v1/subscription_items?subscription=" + id}};
    s["created"] = now;
    s["start_date"] = now;
    s["billing_cycle_anchor"] = anchor;
    s["billing_cycle_anchor_config"] = nullptr;
    s["trial_start"] = trial_end ? bj::value(now) : nullptr;
    s["trial_end"] = trial_end ? bj::value(*trial_end) : nullptr;
    const bool cancel_at_period_end = Str(params, "cancel_at_period_end") == "true";
    s["cancel_at_period_end"] = cancel_at_period_end;
    s["cancel_at"] = cancel_at_period_end ? bj::value(period_end) : nullptr;
    s["canceled_at"] = nullptr;
    s["ended_at"] = nullptr;
    s["cancellation_details"] = bj::object{{"comment", nullptr}, {"feedback", nullptr}, {"reason", nullptr}};
    s["currency"] = price->at("currency");
    s["livemode"] = false;
    s["latest_invoice"] = nullptr;
    s["pending_update"] = nullptr;
    s["pause_collection"] = nullptr;
    s["schedule"] = nullptr;
    s["transfer_data"] = nullptr;
    s["discounts"] = bj::array();
    s["description"] = nullptr;
    s["days_until_due"] = nullptr;
    s["collection_method"] = "charge_automatically";
    s["default_payment_method"] = Has(params, "default_payment_method") ? bj::value(Str(params, "default_payment_method")) : nullptr;
    s["test_clock"] = customer->at("test_clock");
    s["metadata"] = bj::object();
    if (auto bad = MergeMetadata(s, params)) return *bad;
    Put("subscription", s);
    Emit("customer.subscription.created", s, nullptr, now);
    bj::object& stored = objects_.at(id);
    InvoiceSubscription(stored, "subscription_create", now);
    return Json(200, stored);
}

http::Response Sandbox::UpdateSubscription(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"cancel_at_period_end", "metadata", "proration_behavior"})) return *bad;
    bj::object* s = Find("subscription", id);
    if (s == nullptr) {
        return NoSuch("subscription", id);
    }
    if (Str(*s, "status") == "canceled") {
        return StripeError(400, "invalid_request_error", "",
                           "A canceled subscription can only update its cancellation_details and metadata.");
    }
    bj::object previous;
    if (Has(params, "cancel_at_period_end")) {
        const bool next = Str(params, "cancel_at_period_end") == "true";
        if (s->at("cancel_at_period_end").as_bool() != next) {
            previous["cancel_at_period_end"] = s->at("cancel_at_period_end");
            previous["cancel_at"] = s->at("cancel_at");
            (*s)["cancel_at_period_end"] = next;
            const auto& item = s->at("items").at("data").as_array()[0].as_object();
            (*s)["cancel_at"] = next ? item.at("current_period_end") : bj::value(nullptr);
        }
    }
    const bj::value old_metadata = (*s)["metadata"];
    if (auto bad = MergeMetadata(*s, params)) return *bad;
    if ((*s)["metadata"] != old_metadata) previous["metadata"] = old_metadata;
    if (!previous.empty()) Emit("customer.subscription.updated", *s, &previous, NowFor(Str(*s, "customer")));
    return Json(200, *s);
}

http::Response Sandbox::CancelSubscription(const std::string& id) {
    bj::object* s = Find("subscription", id);
    if (s == nullptr) {
        return NoSuch("subscription", id);
    }
    if (Str(*s, "status") == "canceled") {
        return StripeError(400, "invalid_request_error", "", "This subscription is already canceled.");
    }
    const int64_t now = NowFor(Str(*s, "customer"));
    (*s)["status"] = "canceled";
    (*s)["canceled_at"] = now;
    (*s)["ended_at"] = now;
    (*s)["cancel_at_period_end"] = false;
    (*s)["cancellation_details"] = bj::object{{"comment", nullptr}, {"feedback", nullptr}, {"reason", "cancellation_requested"}};
    Emit("customer.subscription.deleted", *s, nullptr, now);
    return Json(200, *s);
}

void Sandbox::InvoiceSubscription(bj::object& s, const std::string& billing_reason, int64_t at) {
    const bj::object& item = s.at("items").at("data").as_array()[0].as_object();
    const bool trialing = Str(s, "status") == "trialing";
    const int64_t quantity = item.at("quantity").to_number<int64_t>();
    // A trial's first invoice is for 0; otherwise the period is billed in advance.
    const int64_t amount = trialing ? 0 : item.at("price").at("unit_amount").to_number<int64_t>() * quantity;
    const std::string id = NewId("in");
    const std::string subscription_id = Str(s, "id");
    const std::string currency = Str(s, "currency");
    bj::object line = Template("invoice").at("lines").at("data").as_array()[0].as_object();
    line["id"] = NewId("il");
    line["invoice"] = id;
    line["amount"] = amount;
    line["subtotal"] = amount;
    line["currency"] = currency;
    line["quantity"] = quantity;
    line["description"] = std::to_string(quantity) + " × " + Str(item.at("price").as_object(), "id") +
                          (trialing ? " (trial)" : "");
    line["period"] = bj::object{{"start", item.at("current_period_start")}, {"end", item.at("current_period_end")}};
    line["parent"] = bj::object{
        {"type", "subscription_item_details"},
        {"invoice_item_details", nullptr},
        {"subscription_item_details",
         bj::object{{"invoice_item", nullptr}, {"proration", false}, {"proration_details", bj::object{{"credited_items", nullptr}}},
                    {"subscription", subscription_id}, {"subscription_item", item.at("id")}}}};
    bj::object inv = Template("invoice");
    inv["id"] = id;
    inv["customer"] = s.at("customer");
    inv["currency"] = currency;
    inv["created"] = at;
    inv["effective_at"] = at;
    inv["period_start"] = item.at("current_period_start");
    inv["period_end"] = item.at("current_period_end");
    inv["billing_reason"] = billing_reason;
    inv["collection_method"] = "charge_automatically";
    inv["lines"] = bj::object{{"object", "list"}, {"data", bj::array{line}}, {"has_more", false},
                              {"url", "/v1/invoices/" + id + "/lines"}};
    inv["parent"] = bj::object{{"type", "subscription_details"}, {"quote_details", nullptr},
                               {"subscription_details", bj::object{{"metadata", nullptr}, {"subscription", subscription_id}}}};
    for (const char* key : {"amount_due", "amount_remaining", "subtotal", "subtotal_excluding_tax", "total",
                            "total_excluding_tax"}) {
        inv[key] = amount;
    }
    inv["amount_paid"] = 0;
    inv["attempt_count"] = 0;
    inv["attempted"] = false;
    inv["status"] = "draft";
    inv["number"] = nullptr;
    inv["livemode"] = false;
    inv["metadata"] = bj::object();
    inv["discounts"] = bj::array();
    inv["from_invoice"] = nullptr;
    inv["last_finalization_error"] = nullptr;
    inv["latest_revision"] = nullptr;
    inv["next_payment_attempt"] = nullptr;
    inv["status_transitions"] = bj::object{{"finalized_at", nullptr}, {"marked_uncollectible_at", nullptr},
                                           {"paid_at", nullptr}, {"voided_at", nullptr}};
    Put("invoice", inv);
    bj::object& stored = objects_.at(id);
    Emit("invoice.created", stored, nullptr, at);
    stored["status"] = "open";
    stored["number"] = Str(*Find("customer", Str(s, "customer")), "invoice_prefix") + "-" +
                       std::to_string(order_["invoice"].size());
    stored["status_transitions"].as_object()["finalized_at"] = at;
    Emit("invoice.finalized", stored, nullptr, at);
    stored["status"] = "paid";
    stored["amount_paid"] = amount;
    stored["amount_remaining"] = 0;
    stored["attempt_count"] = amount > 0 ? 1 : 0;
    stored["attempted"] = amount > 0;
    stored["status_transitions"].as_object()["paid_at"] = at;
    Emit("invoice.paid", stored, nullptr, at);
    Emit("invoice.payment_succeeded", stored, nullptr, at);
    s["latest_invoice"] = id;
}

int64_t Sandbox::NowFor(const std::string& customer_id) {
    const bj::object* customer = Find("customer", customer_id);
    if (customer != nullptr && customer->at("test_clock").is_string()) {
        if (const bj::object* clock = Find("test_helpers.test_clock", Str(*customer, "test_clock"))) {
            return clock->at("frozen_time").to_number<int64_t>();
        }
    }
    return config_.now();
}

http::Response Sandbox::CreateTestClock(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"frozen_time", "name"})) return *bad;
    if (!Has(params, "frozen_time")) return Missing("frozen_time");
    const auto frozen = Int(Str(params, "frozen_time"));
    if (!frozen || *frozen < 0) return Invalid("frozen_time", "Invalid timestamp");
    bj::object clock = Template("test_helpers.test_clock");
    clock["id"] = NewId("clock");
    clock["frozen_time"] = *frozen;
    clock["name"] = Has(params, "name") ? bj::value(Str(params, "name")) : nullptr;
    clock["created"] = config_.now();
    clock["deletes_after"] = config_.now() + kTestClockLifetimeSeconds;
    clock["status"] = "ready";
    clock["status_details"] = bj::object();
    Put("test_helpers.test_clock", clock);
    return Json(200, clock);
}

bool Sandbox::RunNextTransition(bj::object& s, int64_t until) {
    const std::string status = Str(s, "status");
    if (status != "active" && status != "trialing") return false;
    bj::object& item = s.at("items").at("data").as_array()[0].as_object();
    const int64_t period_end = item.at("current_period_end").to_number<int64_t>();
    // Stripe sends trial_will_end three days before the trial ends (at once if fewer remain).
    const std::string id = Str(s, "id");
    if (status == "trialing" && !trial_notice_sent_.count(id)) {
        const int64_t notice_at = std::max(s.at("trial_start").to_number<int64_t>(), period_end - kTrialWillEndNoticeSeconds);
        if (notice_at <= until) {
            trial_notice_sent_.insert(id);
            Emit("customer.subscription.trial_will_end", s, nullptr, notice_at);
            return true;
        }
    }
    if (period_end > until) return false;
    bj::object previous;
    if (s.at("cancel_at_period_end").as_bool()) {
        previous["status"] = s.at("status");
        s["status"] = "canceled";
        s["canceled_at"] = period_end;
        s["ended_at"] = period_end;
        s["cancellation_details"] = bj::object{{"comment", nullptr}, {"feedback", nullptr}, {"reason", "cancellation_requested"}};
    } else {
        // Renewal: the next period follows the billing cycle anchor (Stripe's month-end rule).
        const auto& recurring = item.at("price").at("recurring").as_object();
        const BillingInterval interval{*ParseIntervalUnit(recurring.at("interval").as_string()),
                                       recurring.at("interval_count").to_number<int64_t>()};
        const Timestamp anchor(s.at("billing_cycle_anchor").to_number<int64_t>());
        const auto period = PeriodContaining(anchor, interval, Timestamp(period_end));
        previous["items"] = s.at("items");
        if (status == "trialing") {
            previous["status"] = "trialing";
            s["status"] = "active";
        }
        item["current_period_start"] = period->start.unix_seconds();
        item["current_period_end"] = period->end.unix_seconds();
        InvoiceSubscription(s, "subscription_cycle", period_end);
    }
    if (Str(s, "status") == "canceled") {
        Emit("customer.subscription.deleted", s, nullptr, period_end);
    } else {
        Emit("customer.subscription.updated", s, &previous, period_end);
    }
    return true;
}

http::Response Sandbox::AdvanceTestClock(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"frozen_time"})) return *bad;
    bj::object* clock = Find("test_helpers.test_clock", id);
    if (clock == nullptr) {
        return NoSuch("test clock", id);
    }
    if (!Has(params, "frozen_time")) return Missing("frozen_time");
    const auto target = Int(Str(params, "frozen_time"));
    const int64_t current = clock->at("frozen_time").to_number<int64_t>();
    if (!target || *target <= current) {
        return Invalid("frozen_time", "Cannot advance a test clock to a time earlier than or equal to its current frozen time.");
    }
    // Run every transition of the clock's subscriptions in the order they would have happened.
    std::vector<std::string> subscriptions;
    for (const auto& sub_id : order_["subscription"]) {
        const bj::object& s = objects_.at(sub_id);
        const bj::object* customer = Find("customer", Str(s, "customer"));
        if (customer != nullptr && Str(*customer, "test_clock") == id) subscriptions.push_back(sub_id);
    }
    for (;;) {
        std::string next;
        int64_t next_at = *target + 1;
        for (const auto& sub_id : subscriptions) {
            // When is this subscription's next transition due? (The same rules as RunNextTransition.)
            const bj::object& s = objects_.at(sub_id);
            const std::string status = Str(s, "status");
            if (status != "active" && status != "trialing") continue;
            int64_t due = s.at("items").at("data").as_array()[0].at("current_period_end").to_number<int64_t>();
            if (status == "trialing" && !trial_notice_sent_.count(sub_id)) {
                due = std::max(s.at("trial_start").to_number<int64_t>(), due - kTrialWillEndNoticeSeconds);
            }
            if (due <= *target && due < next_at) {
                next_at = due;
                next = sub_id;
            }
        }
        if (next.empty()) break;
        clock->at("frozen_time") = next_at;  // objects created by the transition see the clock at that instant
        RunNextTransition(objects_.at(next), *target);
    }
    clock->at("frozen_time") = *target;
    clock->at("status") = "ready";
    return Json(200, *clock);
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
