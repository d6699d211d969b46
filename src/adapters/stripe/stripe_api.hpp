#pragma once
// The StripeApi port over Tally's Stripe HTTP client.
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "adapters/stripe/stripe_client.hpp"
#include "app/ports.hpp"

namespace tally::stripe {

/// StripeApi on a stripe::Client (real Stripe or the sandbox). Price ids found by lookup key are cached for
/// the process's life (a price's lookup key can move to another price: restart, or use `transfer_lookup_key`
/// with care). Thread-safe.
class HttpStripeApi final : public StripeApi {
public:
    explicit HttpStripeApi(Client& client) : client_(client) {}
    /// Puts customers created from now on on this test clock (sandbox and test mode only), so their time can be
    /// advanced; empty to stop.
    void SetTestClock(std::string clock_id) {
        std::lock_guard lock(mu_);
        test_clock_ = std::move(clock_id);
    }
    Result<StripeCustomerId> CreateCustomer(const std::string& email, const std::string& name,
                                            const std::string& external_id, const std::string& idempotency_key) override;
    Result<std::string> FindPriceId(const std::string& lookup_key) override;
    Result<HostedSession> CreateCheckoutSession(const CheckoutSessionRequest& request) override;
    Result<HostedSession> CreatePortalSession(const StripeCustomerId& customer, const std::string& return_url) override;
    Result<std::pair<std::string, bool>> EnsurePrice(const StripePriceSpec& spec) override;
    Result<std::vector<std::string>> SyncPlan(const StripePlanSpec& spec) override;
    Status UpdateCustomerProfile(const StripeCustomerId& id, const StripeCustomerProfile& profile) override;
    Result<Timestamp> SubscriptionNow(const StripeSubscriptionId& id, Timestamp wall_now) override;
    Result<std::string> DefaultPaymentMethod(const StripeCustomerId& id) override;
    Result<std::string> OffSessionPaymentMethod(const StripeCustomerId& id) override;
    Result<StripeSubscriptionData> CreateSubscription(const StripeSubscriptionCreate& request) override;
    Result<StripePaymentData> CreatePaymentIntent(const StripePaymentIntentCreate& request) override;
    Result<StripePaymentData> RefundPayment(const std::string& payment_intent, int64_t amount_minor,
                                            const std::string& idempotency_key) override;
    Result<StripePaymentData> RetrievePaymentIntent(const std::string& id) override;
    Result<StripeSubscriptionData> RetrieveSubscription(const StripeSubscriptionId& id) override;
    Result<StripeSubscriptionData> UpdateSubscription(const StripeSubscriptionId& id,
                                                      const StripeSubscriptionUpdate& update) override;
    Result<StripeSubscriptionData> CancelSubscription(const StripeSubscriptionId& id, bool prorate,
                                                      const std::string& idempotency_key) override;
    Result<StripeInvoicePreview> PreviewSubscriptionChange(const StripeSubscriptionId& id, const std::string& price_id,
                                                           int64_t proration_date,
                                                           const std::string& proration_behavior) override;
    Result<StripeScheduleData> ScheduleSubscriptionChange(const StripeSubscriptionId& id, const std::string& schedule_id,
                                                          const SchedulePhase& current, const SchedulePhase& next,
                                                          const std::string& idempotency_key) override;
    Result<StripeScheduleData> ReleaseSchedule(const std::string& id, const std::string& idempotency_key) override;

private:
    /// The id of subscription |id|'s single item (Stripe needs it to change the item's price).
    Result<std::string> SubscriptionItemId(const StripeSubscriptionId& id);

    Client& client_;
    std::mutex mu_;
    std::unordered_map<std::string, std::string> price_ids_;  // lookup_key -> price id
    std::string test_clock_;
};

/// StripeApi when Tally runs without Stripe (no STRIPE_SECRET_KEY and no --stripe-sandbox): webhooks are still
/// received and applied, and every call that needs Stripe fails with kUnavailable, reason kStripeNotConfigured
/// (503 `stripe_not_configured`). Thread-safe, stateless.
class UnconfiguredStripeApi final : public StripeApi {
public:
    Result<StripeCustomerId> CreateCustomer(const std::string&, const std::string&, const std::string&,
                                            const std::string&) override {
        return NotConfigured();
    }
    Result<std::string> FindPriceId(const std::string&) override { return NotConfigured(); }
    Result<HostedSession> CreateCheckoutSession(const CheckoutSessionRequest&) override { return NotConfigured(); }
    Result<HostedSession> CreatePortalSession(const StripeCustomerId&, const std::string&) override {
        return NotConfigured();
    }
    Result<std::pair<std::string, bool>> EnsurePrice(const StripePriceSpec&) override { return NotConfigured(); }
    Result<std::vector<std::string>> SyncPlan(const StripePlanSpec&) override { return NotConfigured(); }
    Status UpdateCustomerProfile(const StripeCustomerId&, const StripeCustomerProfile&) override {
        return NotConfigured();
    }
    Result<Timestamp> SubscriptionNow(const StripeSubscriptionId&, Timestamp) override { return NotConfigured(); }
    Result<std::string> DefaultPaymentMethod(const StripeCustomerId&) override { return NotConfigured(); }
    Result<StripeSubscriptionData> CreateSubscription(const StripeSubscriptionCreate&) override {
        return NotConfigured();
    }
    Result<StripeSubscriptionData> RetrieveSubscription(const StripeSubscriptionId&) override { return NotConfigured(); }
    Result<StripePaymentData> CreatePaymentIntent(const StripePaymentIntentCreate&) override { return NotConfigured(); }
    Result<StripePaymentData> RefundPayment(const std::string&, int64_t, const std::string&) override {
        return NotConfigured();
    }
    Result<StripePaymentData> RetrievePaymentIntent(const std::string&) override { return NotConfigured(); }
    Result<StripeSubscriptionData> UpdateSubscription(const StripeSubscriptionId&,
                                                      const StripeSubscriptionUpdate&) override {
        return NotConfigured();
    }
    Result<StripeSubscriptionData> CancelSubscription(const StripeSubscriptionId&, bool, const std::string&) override {
        return NotConfigured();
    }
    Result<StripeInvoicePreview> PreviewSubscriptionChange(const StripeSubscriptionId&, const std::string&, int64_t,
                                                           const std::string&) override {
        return NotConfigured();
    }
    Result<StripeScheduleData> ScheduleSubscriptionChange(const StripeSubscriptionId&, const std::string&,
                                                          const SchedulePhase&, const SchedulePhase&,
                                                          const std::string&) override {
        return NotConfigured();
    }
    Result<StripeScheduleData> ReleaseSchedule(const std::string&, const std::string&) override { return NotConfigured(); }
    static Error NotConfigured() {
        return Error{ErrorCode::kUnavailable,
                     "Stripe is not configured: set STRIPE_SECRET_KEY, or start with --stripe-sandbox for the offline "
                     "sandbox",
                     "", ErrorReason::kStripeNotConfigured};
    }
};

constexpr int64_t kWebhookEndpointCheckIntervalMs = 30000;

/// Watches whether Tally's webhook endpoint is still registered in Stripe (someone may delete it, and then no
/// event arrives while everything else looks healthy). Checks on its own thread every
/// kWebhookEndpointCheckIntervalMs: by id when Tally registered the endpoint itself (the sandbox), else by
/// listing the account's endpoints for |url|. Thread-safe.
class WebhookEndpointMonitor {
public:
    /// |endpoint_id| empty: look for |url| among the account's endpoints. Checks every |interval_ms|.
    WebhookEndpointMonitor(Client& client, std::string endpoint_id, std::string url,
                           int64_t interval_ms = kWebhookEndpointCheckIntervalMs);
    ~WebhookEndpointMonitor();
    WebhookEndpointMonitor(const WebhookEndpointMonitor&) = delete;
    WebhookEndpointMonitor& operator=(const WebhookEndpointMonitor&) = delete;
    /// "registered" | "missing" | "unknown" (not checked yet, or Stripe unreachable).
    std::string State() const;
    /// Checks now, on the caller's thread, and returns the new state.
    std::string CheckNow();

private:
    void Run();
    Client& client_;
    const std::string endpoint_id_;
    const std::string url_;
    const int64_t interval_ms_;
    std::atomic<int> state_{0};  // 0 unknown, 1 registered, 2 missing
    std::mutex mu_;
    std::condition_variable cv_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace tally::stripe
