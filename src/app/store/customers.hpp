#pragma once
// The customers aggregate of the Store port: Tally's customers, their Stripe link, role and role override, their
// profile, and the members of organization customers.
// Reached from a transaction as StoreTx::customers().
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "domain/event_order.hpp"
#include "domain/ids.hpp"
#include "domain/membership.hpp"
#include "domain/profile.hpp"
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
    // The identity profile (seeds 000/001).
    CustomerType type = CustomerType::kIndividual;
    std::string auth_provider;  // "" when unknown
    std::string company;
    bool email_verified = false;
    Metadata metadata;
    bool stripe_sync_pending = false;  // a profile change not pushed to the Stripe customer yet
};

/// Which customers a list returns: every given field must match; newest first (created, then id, descending).
struct CustomerFilter {
    std::optional<CustomerType> type;
    std::optional<std::string> auth_provider;
    std::optional<std::string> company;
    std::optional<bool> email_verified;
    std::vector<std::pair<std::string, std::string>> metadata;  // each key must hold that value
    std::optional<CustomerId> starting_after;  // the last customer of the previous page
    int limit = 100;
};

/// One app user's membership of an organization customer.
struct MemberRecord {
    CustomerId customer_id;
    std::string user_id;  // the app's user id
    std::string email;
    MemberRole role = MemberRole::kMember;
    Timestamp created_at;
    Timestamp updated_at;
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
    /// At most |filter.limit| customers matching |filter|, newest first.
    virtual Result<std::vector<CustomerRecord>> List(const CustomerFilter& filter) = 0;
    /// Customers whose profile waits to be pushed to Stripe (stripe_sync_pending), at most |limit|.
    virtual Result<std::vector<CustomerId>> ListStripeSyncPending(int limit) = 0;

    /// kConflict if (customer_id, user_id) is already a member.
    virtual Status InsertMember(const MemberRecord& member) = 0;
    /// Replaces email, role and updated_at of that member.
    virtual Status UpdateMember(const MemberRecord& member) = 0;
    virtual Status DeleteMember(const CustomerId& customer_id, const std::string& user_id) = 0;
    virtual Result<std::optional<MemberRecord>> GetMember(const CustomerId& customer_id, const std::string& user_id) = 0;
    /// Oldest first.
    virtual Result<std::vector<MemberRecord>> ListMembers(const CustomerId& customer_id) = 0;
    /// Every customer |user_id| is a member of, oldest membership first.
    virtual Result<std::vector<MemberRecord>> ListMembershipsOfUser(const std::string& user_id) = 0;
};

}  // namespace tally
