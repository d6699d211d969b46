#include "adapters/stripe/stripe_api.hpp"

namespace tally::stripe {
namespace bj = boost::json;

namespace {

std::string StringField(const bj::value& body, const char* key) {
    const auto* v = body.is_object() ? body.get_object().if_contains(key) : nullptr;
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

Result<HostedSession> Session(const Result<Response>& r) {
    if (!r.ok()) return r.error();
    HostedSession s{StringField(r->body, "id"), StringField(r->body, "url")};
    if (s.id.empty() || s.url.empty()) return Unavailable("Stripe returned a session without id or url");
    return s;
}

}  // namespace

Result<StripeCustomerId> HttpStripeApi::CreateCustomer(const std::string& email, const std::string& name,
                                                       const std::string& external_id,
                                                       const std::string& idempotency_key) {
    bj::object params{{"metadata", bj::object{{"external_id", external_id}}}};
    if (!email.empty()) params["email"] = email;
    if (!name.empty()) params["name"] = name;
    {
        std::lock_guard lock(mu_);
        if (!test_clock_.empty()) params["test_clock"] = test_clock_;
    }
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Post("/v1/customers", params, idempotency_key));
    const std::string id = StringField(r.body, "id");
    if (id.empty()) return Unavailable("Stripe returned a customer without an id");
    return StripeCustomerId(id);
}

Status HttpStripeApi::UpdateCustomerProfile(const StripeCustomerId& id, const StripeCustomerProfile& profile) {
    // Stripe merges metadata on update: read what it holds, then send the difference ("" removes a key).
    const std::string path = "/v1/customers/" + id.str();
    TALLY_ASSIGN_OR_RETURN(Response current, client_.Get(path));
    Metadata stripe_metadata;
    std::string email;
    std::string name;
    if (const auto* o = current.body.if_object()) {
        if (const auto* m = o->if_contains("metadata"); m != nullptr && m->is_object()) {
            for (const auto& kv : m->get_object()) {
                if (kv.value().is_string()) stripe_metadata[std::string(kv.key())] = std::string(kv.value().get_string());
            }
        }
        email = StringField(current.body, "email");
        name = StringField(current.body, "name");
    }
    const auto patch = MetadataPatch(stripe_metadata, profile.metadata);
    if (patch.empty() && email == profile.email && name == profile.name) return {};
    bj::object params;
    if (email != profile.email) params["email"] = profile.email;
    if (name != profile.name) params["name"] = profile.name;
    if (!patch.empty()) {
        bj::object metadata;
        for (const auto& [k, v] : patch) metadata[k] = v;
        params["metadata"] = std::move(metadata);
    }
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Post(path, params, ""));
    (void)r;
    return {};
}

Result<std::string> HttpStripeApi::FindPriceId(const std::string& lookup_key) {
    {
        std::lock_guard lock(mu_);
        if (auto it = price_ids_.find(lookup_key); it != price_ids_.end()) return it->second;
    }
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Get("/v1/prices", bj::object{{"lookup_keys", bj::array{bj::value(lookup_key)}},
                                                                          {"active", "true"},
                                                                          {"limit", "1"}}));
    const auto* data = r.body.is_object() ? r.body.get_object().if_contains("data") : nullptr;
    if (data == nullptr || !data->is_array() || data->get_array().empty()) {
        return NotFound("Stripe has no active price with lookup_key '" + lookup_key +
                            "': create it in the Stripe dashboard or run `tally catalog push`",
                        "lookup_key");
    }
    const std::string id = StringField(data->get_array()[0], "id");
    std::lock_guard lock(mu_);
    price_ids_[lookup_key] = id;
    return id;
}

Result<HostedSession> HttpStripeApi::CreateCheckoutSession(const CheckoutSessionRequest& request) {
    bj::object params{{"mode", "subscription"},
                      {"customer", request.customer.str()},
                      {"line_items", bj::array{bj::object{{"price", request.price_id}, {"quantity", "1"}}}},
                      {"client_reference_id", request.client_reference_id},
                      {"success_url", request.success_url},
                      {"cancel_url", request.cancel_url},
                      {"metadata", bj::object{{"tally_customer_id", request.client_reference_id}}}};
    bj::object subscription_data{{"metadata", bj::object{{"tally_customer_id", request.client_reference_id}}}};
    if (request.trial_period_days > 0) subscription_data["trial_period_days"] = std::to_string(request.trial_period_days);
    params["subscription_data"] = std::move(subscription_data);
    return Session(client_.Post("/v1/checkout/sessions", params, request.idempotency_key));
}

Result<HostedSession> HttpStripeApi::CreatePortalSession(const StripeCustomerId& customer, const std::string& return_url) {
    bj::object params{{"customer", customer.str()}};
    if (!return_url.empty()) params["return_url"] = return_url;
    return Session(client_.Post("/v1/billing_portal/sessions", params));
}

Result<std::pair<std::string, bool>> HttpStripeApi::EnsurePrice(const StripePriceSpec& spec) {
    auto existing = FindPriceId(spec.lookup_key);
    if (existing.ok()) return std::make_pair(*existing, false);
    if (existing.error().code != ErrorCode::kNotFound) return existing.error();
    // The product may exist from an earlier push (its id is stable); create it only when missing.
    auto product = client_.Get("/v1/products/" + spec.product_id);
    if (!product.ok()) {
        if (product.error().code != ErrorCode::kNotFound) return product.error();
        TALLY_TRY(client_.Post("/v1/products", bj::object{{"id", spec.product_id}, {"name", spec.product_name}},
                               "tally_product_" + spec.product_id)
                      );
    }
    bj::object params{{"product", spec.product_id},
                      {"currency", spec.currency},
                      {"unit_amount", std::to_string(spec.unit_amount_minor)},
                      {"lookup_key", spec.lookup_key},
                      {"recurring", bj::object{{"interval", spec.interval},
                                               {"interval_count", std::to_string(spec.interval_count)}}}};
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Post("/v1/prices", params, "tally_price_" + spec.lookup_key));
    const std::string id = StringField(r.body, "id");
    std::lock_guard lock(mu_);
    price_ids_[spec.lookup_key] = id;
    return std::make_pair(id, true);
}

WebhookEndpointMonitor::WebhookEndpointMonitor(Client& client, std::string endpoint_id, std::string url,
                                               int64_t interval_ms)
    : client_(client), endpoint_id_(std::move(endpoint_id)), url_(std::move(url)), interval_ms_(interval_ms) {
    thread_ = std::thread([this] { Run(); });
}

WebhookEndpointMonitor::~WebhookEndpointMonitor() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

std::string WebhookEndpointMonitor::State() const {
    switch (state_.load()) {
        case 1: return "registered";
        case 2: return "missing";
        default: return "unknown";
    }
}

std::string WebhookEndpointMonitor::CheckNow() {
    int state = 0;
    if (!endpoint_id_.empty()) {
        auto got = client_.Get("/v1/webhook_endpoints/" + endpoint_id_);
        if (got.ok()) {
            // Stripe answers a deleted object with {"deleted": true} (or a 404); a disabled endpoint sends nothing.
            const auto* body = got->body.if_object();
            const auto* deleted = body ? body->if_contains("deleted") : nullptr;
            const auto* status = body ? body->if_contains("status") : nullptr;
            const bool gone = (deleted && deleted->is_bool() && deleted->get_bool()) ||
                              (status && status->is_string() && status->get_string() == "disabled");
            state = gone ? 2 : 1;
        } else if (got.error().code == ErrorCode::kNotFound) {
            state = 2;
        }
    } else {
        bool found = false;
        Status listed = client_.ListAll("/v1/webhook_endpoints", {}, [&](const boost::json::object& e) {
            const auto* url = e.if_contains("url");
            const auto* status = e.if_contains("status");
            found = url && url->is_string() && url->get_string() == url_ &&
                    !(status && status->is_string() && status->get_string() == "disabled");
            return !found;
        });
        if (listed.ok()) state = found ? 1 : 2;
    }
    state_ = state;
    return State();
}

void WebhookEndpointMonitor::Run() {
    std::unique_lock lock(mu_);
    for (;;) {
        lock.unlock();
        (void)CheckNow();
        lock.lock();
        if (cv_.wait_for(lock, std::chrono::milliseconds(interval_ms_), [this] { return stopping_; })) {
            return;
        }
    }
}

}  // namespace tally::stripe
