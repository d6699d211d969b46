#pragma once
// The customers aggregate of the Store port: Tally's customers, their Stripe link, role and role override.
// Reached from a transaction as StoreTx::customers().
#include <optional>
#include <string>
#include <vector>

#include "domain/event_order.hpp"
#include "domain/ids.hpp"
#include "domain/result.hpp"
#include "domain/role.hpp"
#include "domain/time.hpp"

namespace tally {

struct CustomerRecord {
    CustomerId id;
    std::string external_id;
    std::string email;
    std::string name;
    std::optional<StripeCustomerId> stripe_customer_id;
    std::string role;     // last persisted role (what the audit trail says)
    std::string plan_id;  // last persisted plan
    Timestamp created_at;
    bool stripe_deleted = false;
    std::optional<EventStamp> stripe_stamp;  // newest customer.* event applied
    std::optional<RoleOverride> role_override;
    std::optional<Timestamp> role_check_at;  // when time alone may next change the role (grace, override expiry)
    std::optional<Timestamp> grace_ends_at;  // last persisted grace period end (customer.grace_period_* events)
};

/// Reads and writes of customers inside one transaction. Not thread-safe (one transaction's thread).
class CustomerStoreTx {
public:
    virtual ~CustomerStoreTx() = default;
    /// kConflict if the id, a non-empty external_id or the Stripe customer id is already taken.
    virtual Status Insert(const CustomerRecord& customer) = 0;
    /// Replaces every field of customer |customer.id|; kConflict as Insert.
    virtual Status Update(const CustomerRecord& customer) = 0;
    virtual Result<std::optional<CustomerRecord>> Get(const CustomerId& id) = 0;
    /// nullopt for an empty |external_id|.
    virtual Result<std::optional<CustomerRecord>> FindByExternalId(const std::string& external_id) = 0;
    virtual Result<std::optional<CustomerRecord>> FindByStripeId(const StripeCustomerId& id) = 0;
    /// Customers whose role_check_at <= now, oldest first, at most |limit|.
    virtual Result<std::vector<CustomerId>> ListDueForRoleCheck(Timestamp now, int limit) = 0;
    /// As ListDueForRoleCheck, locked for this transaction: customers another transaction holds (another node's
    /// sweep) are skipped, not waited for. Write transactions only.
    virtual Result<std::vector<CustomerId>> ClaimDueForRoleCheck(Timestamp now, int limit) = 0;
};

}  // namespace tally
