#pragma once
// The HTTP API v1 and the Stripe webhook endpoint.
#include <mutex>
#include <string>
#include <unordered_map>

#include "adapters/http/server.hpp"
#include "app/billing_service.hpp"
#include "app/checkout_service.hpp"
#include "app/webhook_processor.hpp"
#include "app/webhook_receiver.hpp"

namespace tally::http {

constexpr size_t kApiBodyBytesMax = size_t{64} * 1024;
constexpr int kListPageSizeDefault = 100;
constexpr int kListPageSizeMax = 500;
constexpr size_t kIdempotencyKeyBytesMax = 255;  // Stripe's limit

struct ApiDeps {
    Store& store;
    BillingService& billing;
    WebhookProcessor& processor;
    WebhookReceiver& receiver;
    CheckoutService& checkout;
    const Catalog& catalog;
    const Clock& clock;
    std::string admin_key_sha256;  // hex SHA-256 of TALLY_ADMIN_KEY; empty when unset
    std::string version;
};

/// Routes requests to use cases and renders results. Thread-safe.
class Api {
public:
    explicit Api(ApiDeps deps) : d_(std::move(deps)) {}
    void Handle(Request req, Responder respond);

private:
    /// The key id for a valid Bearer key, or an error (401).
    Result<std::string> Authenticate(const Request& req);
    Response Dispatch(const Request& req, const std::string& actor);
    void HandleWebhook(Request req, Responder respond);

    ApiDeps d_;
    std::mutex key_cache_mu_;
    std::unordered_map<std::string, std::string> key_cache_;  // sha256 -> key id; keys are never revoked yet
};

/// Maps an Error to its HTTP status and Stripe-style error body.
Response ErrorResponse(const Error& error);

}  // namespace tally::http
