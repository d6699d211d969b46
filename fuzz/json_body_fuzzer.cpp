// Fuzzes the v1 API's JSON body binding: tally::http::BindJsonBody, then the json_util readers on its result the
// way the handlers in src/adapters/http/api.cpp read them.
//
// Input: byte 0 picks the endpoint (its allowed parameters and readers; 250..255 also pad the body past
// kApiBodyBytesMax), the rest is the request body. Properties:
// a bound body holds only allowed parameters; every error renders as a 4xx (bad input never produces a 5xx) whose
// body is valid JSON.
#include <boost/json.hpp>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "adapters/config/json_util.hpp"
#include "adapters/http/api.hpp"
#include "app/api_keys.hpp"

namespace {

namespace bj = boost::json;
using tally::Error;
using tally::Result;

void Check(bool condition) {
    if (!condition) __builtin_trap();
}

// Bad input is the client's fault: ErrorResponse must say 4xx, in JSON.
void CheckClientError(const Error& error) {
    const tally::http::Response response = tally::http::ErrorResponse(error);
    Check(response.status >= 400 && response.status < 500);
    bj::error_code ec;
    const bj::value body = bj::parse(response.body, ec);
    Check(!ec && body.is_object() && body.as_object().contains("error"));
}

template <typename T>
bool Fails(const Result<T>& r) {
    if (r.ok()) return false;
    CheckClientError(r.error());
    return true;
}

Result<bj::object> Bind(const std::string& body, std::initializer_list<const char*> allowed) {
    tally::http::Request req;
    req.method = "POST";
    req.body = body;
    auto bound = tally::http::BindJsonBody(req, allowed);
    if (bound.ok()) {
        for (const auto& kv : *bound) {
            bool known = false;
            for (const char* k : allowed) known = known || kv.key() == k;
            Check(known);
        }
    }
    return bound;
}

// Every reader on every allowed key, for the type checks the handlers do not happen to make.
void ReadAll(const bj::object& body, std::initializer_list<const char*> allowed) {
    for (const char* key : allowed) {
        (void)Fails(tally::json::RequiredString(body, key, ""));
        (void)Fails(tally::json::OptionalString(body, key, "body"));
        (void)Fails(tally::json::OptionalInt(body, key, ""));
        (void)Fails(tally::json::OptionalBool(body, key, "", false));
    }
}

void CreateCustomer(const std::string& text) {  // POST /v1/customers
    const auto allowed = {"external_id", "email", "name"};
    auto body = Bind(text, allowed);
    if (Fails(body)) return;
    ReadAll(*body, allowed);
    if (Fails(tally::json::RequiredString(*body, "external_id", ""))) return;
    if (Fails(tally::json::OptionalString(*body, "email", ""))) return;
    (void)Fails(tally::json::OptionalString(*body, "name", ""));
}

void SetRoleOverride(const std::string& text) {  // POST /v1/customers/{id}/role_override
    const auto allowed = {"role", "reason", "expires_at"};
    auto body = Bind(text, allowed);
    if (Fails(body)) return;
    ReadAll(*body, allowed);
    if (Fails(tally::json::RequiredString(*body, "role", ""))) return;
    if (Fails(tally::json::RequiredString(*body, "reason", ""))) return;
    auto expires = tally::json::OptionalInt(*body, "expires_at", "");
    if (Fails(expires)) return;
    if (*expires) (void)tally::Timestamp(**expires);
}

void StartCheckout(const std::string& text) {  // POST /v1/checkout_sessions
    const auto allowed = {"customer", "plan", "interval", "success_url", "cancel_url", "trial_period_days"};
    auto body = Bind(text, allowed);
    if (Fails(body)) return;
    ReadAll(*body, allowed);
    auto customer = tally::json::RequiredString(*body, "customer", "");
    if (Fails(customer)) return;
    if (customer->empty()) return;
    if (Fails(tally::json::RequiredString(*body, "plan", ""))) return;
    auto interval = tally::json::OptionalString(*body, "interval", "");
    if (Fails(interval)) return;
    if (Fails(tally::json::OptionalString(*body, "success_url", ""))) return;
    if (Fails(tally::json::OptionalString(*body, "cancel_url", ""))) return;
    if (Fails(tally::json::OptionalInt(*body, "trial_period_days", ""))) return;
    const bool has_interval = body->contains("interval") && !body->at("interval").is_null();
    Check(!has_interval || body->at("interval").is_string());  // OptionalString passed
}

void StartPortal(const std::string& text) {  // POST /v1/billing_portal_sessions
    const auto allowed = {"customer", "return_url"};
    auto body = Bind(text, allowed);
    if (Fails(body)) return;
    ReadAll(*body, allowed);
    if (Fails(tally::json::RequiredString(*body, "customer", ""))) return;
    (void)Fails(tally::json::OptionalString(*body, "return_url", ""));
}

void CreateApiKey(const std::string& text) {  // POST /v1/api_keys
    const auto allowed = {"scope", "name"};
    auto body = Bind(text, allowed);
    if (Fails(body)) return;
    ReadAll(*body, allowed);
    auto scope_text = tally::json::RequiredString(*body, "scope", "");
    if (Fails(scope_text)) return;
    if (Fails(tally::ParseApiKeyScope(*scope_text))) return;
    (void)Fails(tally::json::RequiredString(*body, "name", ""));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
    if (data[0] >= 250) body.resize(tally::http::kApiBodyBytesMax + 1, ' ');  // over the limit: 413
    switch (data[0] % 5) {
        case 0: CreateCustomer(body); break;
        case 1: SetRoleOverride(body); break;
        case 2: StartCheckout(body); break;
        case 3: StartPortal(body); break;
        default: CreateApiKey(body); break;
    }
    return 0;
}
