#include "sandbox/sandbox.hpp"

#include <algorithm>

#include "adapters/crypto.hpp"
#include "sandbox/sandbox_util.hpp"
#include "domain/money.hpp"
#include "domain/time.hpp"

namespace tally::sandbox {

using namespace detail;  // NOLINT(google-build-using-namespace): the sandbox's own helpers

http::Response Sandbox::CreateCustomer(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"email", "name", "description", "phone", "metadata", "test_clock", "payment_method",
                                        "invoice_settings"})) {
        return *bad;
    }
    std::string default_pm;
    if (const auto* settings = params.if_contains("invoice_settings")) {
        if (!settings->is_object()) return Invalid("invoice_settings", "Invalid object");
        if (auto bad = OnlyParams(settings->get_object(), {"default_payment_method"})) return *bad;
        default_pm = Str(settings->get_object(), "default_payment_method");
        if (!default_pm.empty() && default_pm != Str(params, "payment_method")) {
            return Invalid("invoice_settings[default_payment_method]",
                           "The default payment method must be the payment_method attached with this request.");
        }
    }
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
    SetNull(c, {"discount", "address", "shipping"});
    c["balance"] = 0;
    c["delinquent"] = false;
    c["default_source"] = nullptr;
    c["currency"] = nullptr;
    c["invoice_prefix"] = Hex(4);
    c["next_invoice_sequence"] = 1;
    c["preferred_locales"] = bj::array();
    c["tax_exempt"] = "none";
    c["invoice_settings"] = bj::object{{"custom_fields", nullptr}, {"default_payment_method", nullptr},
                                       {"footer", nullptr}, {"rendering_options", nullptr}};
    if (auto bad = MergeMetadata(c, params)) return *bad;
    if (Has(params, "payment_method") && ResolvePaymentMethod(Str(params, "payment_method")) == nullptr) {
        return Invalid("payment_method", "No such PaymentMethod: '" + Str(params, "payment_method") + "'");
    }
    const std::string id = Str(c, "id");
    Put("customer", c);
    Emit("customer.created", c, nullptr, c.at("created").to_number<int64_t>());
    if (Has(params, "payment_method")) {
        // Stripe attaches the payment method as part of creating the customer.
        auto attached = Attach(Str(params, "payment_method"), id);
        if (auto* err = std::get_if<http::Response>(&attached)) return *err;
        if (!default_pm.empty()) {
            objects_.at(id)["invoice_settings"].as_object()["default_payment_method"] = std::get<std::string>(attached);
        }
    }
    return Json(200, objects_.at(id));
}

http::Response Sandbox::UpdateCustomer(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"email", "name", "description", "phone", "metadata", "invoice_settings"})) return *bad;
    bj::object* c = Find("customer", id);
    if (c == nullptr) {
        return NoSuch("customer", id);
    }
    bj::object previous;
    if (const auto* settings = params.if_contains("invoice_settings")) {
        if (!settings->is_object()) return Invalid("invoice_settings", "Invalid object");
        if (auto bad = OnlyParams(settings->get_object(), {"default_payment_method"})) return *bad;
        const std::string pm = Str(settings->get_object(), "default_payment_method");
        if (!pm.empty()) {
            const bj::object* method = Find("payment_method", pm);
            if (method == nullptr || Str(*method, "customer") != id) {
                return Invalid("invoice_settings[default_payment_method]",
                               "The customer does not have a payment method with the ID " + pm +
                                   ". The payment method must be attached to the customer.");
            }
        }
        bj::object& current = (*c)["invoice_settings"].as_object();
        const bj::value next = pm.empty() ? bj::value(nullptr) : bj::value(pm);
        if (current["default_payment_method"] != next) {
            previous["invoice_settings"] = current;
            current["default_payment_method"] = next;
        }
    }
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
    SetNull(p, {"tiers_mode", "transform_quantity", "custom_unit_amount"});
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

http::Response Sandbox::UpdateProduct(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"name", "description", "active", "metadata"})) return *bad;
    bj::object* p = Find("product", id);
    if (p == nullptr) return NoSuch("product", id);
    bj::object previous;
    if (Has(params, "name") && Str(params, "name") != Str(*p, "name")) {
        if (Str(params, "name").empty()) return Invalid("name", "You passed an empty string for 'name'.");
        previous["name"] = (*p)["name"];
        (*p)["name"] = Str(params, "name");
    }
    if (Has(params, "description")) {
        previous["description"] = (*p)["description"];
        (*p)["description"] = Str(params, "description").empty() ? bj::value(nullptr) : bj::value(Str(params, "description"));
    }
    if (Has(params, "active")) {
        const bool active = Str(params, "active") == "true";
        if (active != (*p)["active"].as_bool()) {
            previous["active"] = (*p)["active"];
            (*p)["active"] = active;
        }
    }
    const bj::value old_metadata = (*p)["metadata"];
    if (auto bad = MergeMetadata(*p, params)) return *bad;
    if ((*p)["metadata"] != old_metadata) previous["metadata"] = old_metadata;
    if (!previous.empty()) {
        (*p)["updated"] = config_.now();
        Emit("product.updated", *p, &previous);
    }
    return Json(200, *p);
}

http::Response Sandbox::UpdatePrice(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"active", "nickname", "metadata", "lookup_key", "transfer_lookup_key"})) {
        return *bad;
    }
    bj::object* p = Find("price", id);
    if (p == nullptr) return NoSuch("price", id);
    bj::object previous;
    if (Has(params, "active")) {
        const bool active = Str(params, "active") == "true";
        if (active != (*p)["active"].as_bool()) {
            previous["active"] = (*p)["active"];
            (*p)["active"] = active;
        }
    }
    if (Has(params, "nickname")) {
        previous["nickname"] = (*p)["nickname"];
        (*p)["nickname"] = Str(params, "nickname").empty() ? bj::value(nullptr) : bj::value(Str(params, "nickname"));
    }
    if (Has(params, "lookup_key") && Str(params, "lookup_key") != Str(*p, "lookup_key")) {
        const std::string key = Str(params, "lookup_key");
        for (const auto& other_id : order_["price"]) {
            bj::object& other = objects_.at(other_id);
            if (other_id == id || key.empty() || Str(other, "lookup_key") != key) continue;
            if (Str(params, "transfer_lookup_key") != "true") {
                return Invalid("lookup_key", "A price (`" + other_id + "`) already uses that lookup key.");
            }
            bj::object moved{{"lookup_key", key}};
            other["lookup_key"] = nullptr;
            Emit("price.updated", other, &moved);
        }
        previous["lookup_key"] = (*p)["lookup_key"];
        (*p)["lookup_key"] = key.empty() ? bj::value(nullptr) : bj::value(key);
    }
    const bj::value old_metadata = (*p)["metadata"];
    if (auto bad = MergeMetadata(*p, params)) return *bad;
    if ((*p)["metadata"] != old_metadata) previous["metadata"] = old_metadata;
    if (!previous.empty()) Emit("price.updated", *p, &previous);
    return Json(200, *p);
}

http::Response Sandbox::CreateWebhookEndpoint(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"url", "enabled_events", "description", "metadata", "api_version"})) return *bad;
    const std::string url = Str(params, "url");
    if (url.empty()) return Missing("url");
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) return Invalid("url", "Invalid URL: " + url);
    const auto* events = params.if_contains("enabled_events");
    if (events == nullptr) return Missing("enabled_events");
    if (!events->is_array() || events->get_array().empty()) return Invalid("enabled_events", "Invalid array");
    for (size_t i = 0; i < events->get_array().size(); ++i) {
        if (!events->get_array()[i].is_string()) {
            return Invalid("enabled_events[" + std::to_string(i) + "]", "Invalid string: an event type or *");
        }
    }
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

}  // namespace tally::sandbox
