#pragma once
// Pushes customers' profiles (email, name, auth provider, company, verified email, metadata) to their Stripe
// customers. A change is committed with stripe_sync_pending set; this pushes it afterwards and clears the flag, so
// Stripe being unreachable never fails or slows the API call, and the push is retried until it lands.
#include <cstdint>
#include <mutex>

#include "app/ports.hpp"
#include "app/store.hpp"

namespace tally {

constexpr int kStripeSyncBatchMax = 50;                 // customers pushed per round
constexpr int64_t kStripeSyncBackoffMsMin = 1000;       // after a failed round, wait this long, doubling...
constexpr int64_t kStripeSyncBackoffMsMax = int64_t{5} * 60'000;  // ...up to this

/// The Stripe metadata of |customer| (StripeCustomerMetadata over its profile).
StripeCustomerProfile StripeProfileOf(const CustomerRecord& customer);

/// Thread-safe. Several nodes may run it at once: they push the same state, which Stripe takes twice harmlessly.
class StripeCustomerSync {
public:
    StripeCustomerSync(Store& store, StripeApi& stripe, const Clock& clock);

    /// Pushes up to kStripeSyncBatchMax pending customers, unless a failed round's backoff is running. A customer
    /// whose profile changed again while it was pushed stays pending for the next round. Returns how many were
    /// pushed; the first error ends the round (and starts the backoff).
    Result<int> SyncPending();

private:
    Store& store_;
    StripeApi& stripe_;
    const Clock& clock_;
    std::mutex mu_;  // one round at a time per node
    int64_t backoff_ms_ = 0;
    int64_t next_round_ms_ = 0;
};

}  // namespace tally
