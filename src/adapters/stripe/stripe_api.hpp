#pragma once
// The StripeApi port over Tally's Stripe HTTP client.
#include <mutex>
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

private:
    Client& client_;
    std::mutex mu_;
    std::unordered_map<std::string, std::string> price_ids_;  // lookup_key -> price id
    std::string test_clock_;
};

}  // namespace tally::stripe
