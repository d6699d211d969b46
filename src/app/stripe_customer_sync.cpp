#include "app/stripe_customer_sync.hpp"

#include <algorithm>

namespace tally {
namespace {
/// Whether the fields Stripe is given are the same in |a| and |b|.
bool SameProfile(const CustomerRecord& a, const CustomerRecord& b) {
    return a.email == b.email && a.name == b.name && a.external_id == b.external_id &&
           a.auth_provider == b.auth_provider && a.company == b.company && a.email_verified == b.email_verified &&
           a.metadata == b.metadata && a.stripe_customer_id == b.stripe_customer_id;
}
}  // namespace

StripeCustomerProfile StripeProfileOf(const CustomerRecord& c) {
    return StripeCustomerProfile{
        c.email, c.name,
        StripeCustomerMetadata(c.metadata, {c.id.str(), c.external_id, c.auth_provider, c.company, c.email_verified})};
}

StripeCustomerSync::StripeCustomerSync(Store& store, StripeApi& stripe, const Clock& clock)
    : store_(store), stripe_(stripe), clock_(clock) {}

Result<int> StripeCustomerSync::SyncPending() {
    std::lock_guard lock(mu_);
    const int64_t now_ms = clock_.NowMs();
    if (now_ms < next_round_ms_) return 0;
    std::vector<CustomerRecord> pending;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto ids, tx.customers().ListStripeSyncPending(kStripeSyncBatchMax));
        for (const auto& id : ids) {
            TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(id));
            if (c) pending.push_back(std::move(*c));
        }
        return {};
    }));
    int pushed = 0;
    for (const auto& read : pending) {
        Status s = read.stripe_customer_id && !read.stripe_deleted
                       ? stripe_.UpdateCustomerProfile(*read.stripe_customer_id, StripeProfileOf(read))
                       : Status{};
        if (!s.ok() && s.error().code != ErrorCode::kNotFound) {
            backoff_ms_ = std::clamp(backoff_ms_ * 2, kStripeSyncBackoffMsMin, kStripeSyncBackoffMsMax);
            next_round_ms_ = now_ms + backoff_ms_;
            return s.error();
        }
        // Pushed (or nothing to push to: no Stripe customer, or one Stripe deleted). Clear the flag unless the
        // profile moved meanwhile: then the next round pushes the newer one.
        TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(auto current, tx.customers().Get(read.id));
            if (!current || !current->stripe_sync_pending || !SameProfile(*current, read)) return {};
            current->stripe_sync_pending = false;
            TALLY_TRY(tx.customers().Update(*current));
            if (!s.ok()) {
                return tx.audit().Append({0, read.id, clock_.Now(), "stripe_sync_skipped", "", "", "stripe_sync",
                                          "Stripe does not know the customer: " + s.error().message});
            }
            return {};
        }));
        ++pushed;
    }
    backoff_ms_ = 0;
    return pushed;
}

}  // namespace tally
