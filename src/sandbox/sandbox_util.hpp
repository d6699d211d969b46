#pragma once
// Helpers shared by the sandbox's translation units: Stripe's error shapes and parameter access.
// Internal to sandbox.
#include <boost/json.hpp>

#include <charconv>
#include <initializer_list>
#include <optional>
#include <string>

#include "adapters/http/server.hpp"
#include "domain/text.hpp"

namespace tally::sandbox::detail {

namespace bj = boost::json;

constexpr int64_t kSecondsPerDay = 86400;
constexpr int64_t kTrialWillEndNoticeSeconds = 3 * kSecondsPerDay;  // Stripe: three days before the trial ends
constexpr int64_t kTestClockLifetimeSeconds = 30 * kSecondsPerDay;  // test clocks are deleted after 30 days

inline http::Response Json(int status, const bj::value& v) { return http::Response{status, bj::serialize(v), "application/json", {}}; }

/// Sets each of |keys| to null: fields of Stripe's objects that the sandbox does not model (or not yet set).
inline void SetNull(bj::object& o, std::initializer_list<const char*> keys) {
    for (const char* key : keys) o[key] = nullptr;
}

/// Stripe's error shape: {"error":{"type","code","message","param"}}.
inline http::Response StripeError(int status, const std::string& type, const std::string& code, const std::string& message,
                           const std::string& param = {}) {
    // Messages quote what the client sent; JSON text must stay UTF-8.
    bj::object err{{"type", type}, {"message", SanitizeUtf8(message)}};
    if (!code.empty()) err["code"] = code;
    if (!param.empty()) err["param"] = SanitizeUtf8(param);
    return Json(status, bj::object{{"error", std::move(err)}});
}

/// Stripe's 404 for an unknown id: "No such customer: 'cus_x'".
/// Stripe's 402 for a failed card payment: {"error":{"type":"card_error","code","decline_code","message",...}};
/// |extra| adds fields such as payment_intent.
inline http::Response CardError(const std::string& code, const std::string& decline_code, const std::string& message,
                                const bj::object& extra = {}) {
    bj::object err{{"type", "card_error"}, {"code", code}, {"message", message}};
    if (!decline_code.empty()) err["decline_code"] = decline_code;
    for (const auto& kv : extra) err[kv.key()] = kv.value();
    return Json(402, bj::object{{"error", std::move(err)}});
}

inline http::Response NoSuch(const std::string& type, const std::string& id) {
    return StripeError(404, "invalid_request_error", "resource_missing", "No such " + type + ": '" + id + "'", "id");
}

inline http::Response Missing(const std::string& param) {
    return StripeError(400, "invalid_request_error", "parameter_missing", "Missing required param: " + param + ".", param);
}

inline http::Response Invalid(const std::string& param, const std::string& message) {
    return StripeError(400, "invalid_request_error", "parameter_invalid", message, param);
}

/// Rejects parameters the endpoint does not know, as Stripe does.
inline std::optional<http::Response> OnlyParams(const bj::object& params, std::initializer_list<const char*> allowed) {
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

/// A JSON number as int64 (Stripe's amounts and timestamps); throws on a non-number, which the sandbox never stores.
inline int64_t I64(const bj::value& v) { return v.to_number<int64_t>(); }

inline std::string Str(const bj::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

inline bool Has(const bj::object& o, const char* key) { return o.if_contains(key) != nullptr; }

/// The subscription an invoice bills (parent.subscription_details.subscription), or "".
inline std::string InvoiceSubscriptionId(const bj::object& invoice) {
    const auto* parent = invoice.if_contains("parent");
    if (parent == nullptr || !parent->is_object()) return {};
    const auto* details = parent->get_object().if_contains("subscription_details");
    return details && details->is_object() ? Str(details->get_object(), "subscription") : std::string();
}

inline std::optional<int64_t> Int(const std::string& s) {
    int64_t v = 0;
    const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    return v;
}

/// Stripe's parameter types, checked for every request before it is routed: a boolean is "true" or "false" in any
/// case (the Python SDK sends "True"), an integer is decimal digits with an optional sign, an enum one of its
/// values. Anything else is a 400 parameter_invalid naming the parameter in Stripe's bracket form
/// ("items[0][quantity]"), never a silent false or 0. Booleans are rewritten to lowercase, so handlers compare
/// with "true". Returns the error response, or nullopt when every typed parameter is well-formed.
std::optional<http::Response> CheckTypedParams(bj::object& params);

/// Applies Stripe's metadata update rules: keys merge, an empty value deletes the key.
inline std::optional<http::Response> MergeMetadata(bj::object& object, const bj::object& params) {
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

inline size_t WriteBody(char* data, size_t size, size_t count, void* user) {
    static_cast<std::string*>(user)->append(data, size * count);
    return size * count;
}

}  // namespace tally::sandbox::detail
