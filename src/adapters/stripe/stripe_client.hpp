#pragma once
// The Stripe API client: one code path for api.stripe.com and the offline sandbox.
#include <boost/json/value.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "adapters/stripe/retry_policy.hpp"
#include "domain/result.hpp"

namespace tally::stripe {

constexpr const char* kStripeApiBaseDefault = "https://api.stripe.com";
constexpr const char* kStripeVersion = "2025-03-31.basil";  // pinned on every request
constexpr int kListPageSizeMax = 100;                      // Stripe's `limit` maximum
constexpr int kListPageCountMax = 10'000;                  // auto-pagination stops here

struct ClientConfig {
    std::string api_base = kStripeApiBaseDefault;  // STRIPE_API_BASE
    std::string secret_key;                        // STRIPE_SECRET_KEY (sk_...)
    int retries_max = kStripeRetryCountDefault;
    int64_t timeout_ms = kStripeTimeoutMsDefault;
    int64_t connect_timeout_ms = 30000;
    /// Sleeps between retries; tests replace it to run instantly.
    std::function<void(std::chrono::milliseconds)> sleep;
    /// Told of every finished call (after its retries): the HTTP method and ok | client_error | server_error |
    /// network_error. For metrics; may be empty.
    std::function<void(const std::string& method, std::string_view outcome)> on_call;
};

/// A Stripe API answer (2xx), with the headers callers may need.
struct Response {
    int http_status = 0;
    boost::json::value body;
    std::string request_id;  // Request-Id header
    int attempts = 1;        // how many tries it took
};

/// Stripe's error object, from a non-2xx answer.
struct ApiError {
    int http_status = 0;
    std::string type;  // card_error, invalid_request_error, idempotency_error, api_error, ...
    std::string code;  // card_declined, resource_missing, parameter_missing, ...
    std::string decline_code;
    std::string message;
    std::string param;
};

/// Maps a Stripe error to Tally's Error: 400 -> kInvalidArgument, 401 -> kUnauthenticated, 402 (card) ->
/// kPaymentRequired (reason kCardDeclined for a card_error), 403 -> kPermissionDenied, 404 -> kNotFound, 409 (and idempotency_error) -> kConflict,
/// 429 and 5xx -> kUnavailable. The message reads "stripe <status> <type>/<code>[ (decline_code)]: <message>".
Error ToError(const ApiError& e);

/// Thread-safe (each request uses its own curl handle). Never logs or returns the secret key.
class Client {
public:
    explicit Client(ClientConfig config);
    ~Client();
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    /// GET |path| (e.g. "/v1/customers/cus_1") with |query| encoded like a form body.
    Result<Response> Get(const std::string& path, const boost::json::object& query = {});
    /// POST |path| with a form-encoded body. |idempotency_key| is sent on every attempt; when empty one is
    /// generated, so retries of this call are always safe. Errors: ToError() of Stripe's answer, or
    /// kUnavailable for connection failures and timeouts after the retries.
    Result<Response> Post(const std::string& path, const boost::json::object& params,
                          std::string idempotency_key = {});
    /// DELETE |path| with |query| encoded like a form body (Stripe reads DELETE parameters from the query).
    Result<Response> Delete(const std::string& path, const boost::json::object& query = {});
    /// Follows `has_more` with `starting_after` (limit 100) and calls |each| for every object of the list at
    /// |path|; stops early when |each| returns false. kInvalidArgument if the answer is not a list.
    Status ListAll(const std::string& path, boost::json::object query,
                   const std::function<bool(const boost::json::object&)>& each);

    /// "sk_test_...abcd": for logs and errors.
    std::string RedactedKey() const;

private:
    Result<Response> Send(const std::string& method, const std::string& path, const std::string& body,
                          const std::string& idempotency_key);
    void Observe(const std::string& method, std::string_view outcome) const;
    ClientConfig config_;
};

}  // namespace tally::stripe
