#pragma once
// Organizations' members, app users' effective roles, and customer sessions (short-lived browser tokens acting for
// one app user inside one customer).
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "app/billing_service.hpp"
#include "app/ports.hpp"
#include "app/store.hpp"
#include "app/user_view.hpp"
#include "domain/membership.hpp"

namespace tally {

constexpr size_t kUserIdBytesMax = 255;
constexpr size_t kOrganizationMembersMax = 5000;     // members per organization; one more is refused (409)
constexpr int64_t kCustomerSessionSecondsDefault = 3600;
constexpr int64_t kCustomerSessionSecondsMin = 60;
constexpr int64_t kCustomerSessionSecondsMax = 86400;
constexpr int64_t kCustomerSessionRetentionSeconds = 86400;  // an expired session still reads as expired this long
constexpr size_t kCustomerSessionSecretBytes = 24;  // random bytes in a token (48 hex characters after the prefix)
inline constexpr std::string_view kCustomerSessionTokenPrefix = "tcs_";

/// Who a customer session acts for.
struct SessionGrant {
    std::string session_id;  // csn_...
    CustomerId customer;
    std::string user;
};

/// A session as created: the token is shown this once and never stored.
struct CreatedCustomerSession {
    CustomerSessionRecord record;
    std::string token;  // "tcs_" + 48 hex characters
};

/// Use cases around organizations, their members and customer sessions. Thread-safe (state lives in the Store).
class MemberService {
public:
    MemberService(Store& store, BillingService& billing, const Clock& clock, const SecretHasher& hasher);

    /// Adds |user| to organization |customer| with |role|. |actor_role| is the caller's own membership when a
    /// customer session calls (nullopt for an API key). kNotFound (param "id") for an unknown customer;
    /// kInvalidArgument reason kCustomerNotOrganization for an individual one, and naming "user" or "email" for bad
    /// values; kConflict reason kResourceAlreadyExists when |user| is a member already, kResourceLimitExceeded past
    /// kOrganizationMembersMax; kPermissionDenied when |actor_role| may not make this change (MayChangeMembership).
    /// Emits customer.member_added, and customer.role_changed about the user when their effective role moves.
    Result<MemberRecord> Add(StoreTx& tx, const CustomerId& customer, const std::string& user, const std::string& email,
                             MemberRole role, std::optional<MemberRole> actor_role, const std::string& actor);
    /// Called by Add inside its transaction before a member is added (UsageService::CheckSeat: the plan's seats);
    /// its error refuses the addition.
    void SetSeatCheck(std::function<Status(StoreTx&, const CustomerId&)> check) { seat_check_ = std::move(check); }
    /// Changes the role and/or email of a member. kNotFound (param "user") when |user| is not a member; kConflict
    /// reason kLastOwner when it would demote the only owner; otherwise as Add. Emits customer.member_updated.
    Result<MemberRecord> Update(StoreTx& tx, const CustomerId& customer, const std::string& user,
                                std::optional<MemberRole> role, std::optional<std::string> email,
                                std::optional<MemberRole> actor_role, const std::string& actor);
    /// Removes a member; errors as Update. Emits customer.member_removed.
    Result<MemberRecord> Remove(StoreTx& tx, const CustomerId& customer, const std::string& user,
                                std::optional<MemberRole> actor_role, const std::string& actor);
    /// Oldest first. kNotFound (param "id") for an unknown customer.
    Result<std::vector<MemberRecord>> List(const CustomerId& customer);
    /// kNotFound (param "user") when |user| is not a member.
    Result<MemberRecord> Get(const CustomerId& customer, const std::string& user);

    /// The role of |user| in |customer|: its members' table for an organization; owner of an individual customer
    /// whose external_id is |user|; nullopt when they do not belong to it (or it does not exist).
    Result<std::optional<MemberRole>> RoleOf(StoreTx& tx, const CustomerId& customer, const std::string& user);
    Result<std::optional<MemberRole>> RoleOf(const CustomerId& customer, const std::string& user);

    /// Every customer |user| belongs to and their effective role. kNotFound (param "user") when none knows them.
    Result<UserView> GetUser(const std::string& user);

    /// Starts a session for |user| inside |customer|, valid |expires_in| seconds (nullopt: the default).
    /// kInvalidArgument naming "expires_in" outside kCustomerSessionSecondsMin..Max, reason kUserNotMember (param
    /// "user") when the user does not belong to the customer; kNotFound (param "customer") for an unknown customer.
    Result<CreatedCustomerSession> CreateSession(StoreTx& tx, const CustomerId& customer, const std::string& user,
                                                 std::optional<int64_t> expires_in, const std::string& actor);
    /// Revokes session |id| (again: unchanged). kNotFound (param "id") for an unknown id.
    Result<CustomerSessionRecord> RevokeSession(StoreTx& tx, const std::string& id, const std::string& actor);
    /// The grant of a session |token|: kUnauthenticated for an unknown token, reason kCustomerSessionExpired or
    /// kCustomerSessionRevoked for one no longer valid.
    Result<SessionGrant> Authenticate(std::string_view token);
    /// Deletes sessions expired more than kCustomerSessionRetentionSeconds ago (their audit entries stay); returns
    /// how many.
    Result<int> PruneExpiredSessions();

private:
    /// The customer |id| as an organization: kNotFound / kInvalidArgument(kCustomerNotOrganization).
    Result<CustomerRecord> Organization(StoreTx& tx, const CustomerId& id);
    /// Emits customer.role_changed about |user| when their effective role is not |before| any more.
    Status EmitIfEffectiveRoleMoved(StoreTx& tx, const std::string& user, const std::string& before,
                                    const CustomerId& cause, Timestamp now);
    Status EmitMember(StoreTx& tx, std::string_view type, const MemberRecord& member);

    Store& store_;
    BillingService& billing_;
    const Clock& clock_;
    const SecretHasher& hasher_;
    std::function<Status(StoreTx&, const CustomerId&)> seat_check_;
};

/// The user view of |user| inside |tx| (no kNotFound: an empty membership list when nobody knows them).
/// |role_instead| replaces the role of customer |instead_of| (what the view was before that customer's change).
Result<UserView> BuildUserView(StoreTx& tx, const Catalog& catalog, const std::string& user,
                               const CustomerId& instead_of = CustomerId(""), const std::string& role_instead = "");

class EventOutbox;
/// After organization |org|'s role moved from |old_role| (inside |tx|, |org| already updated): emits
/// customer.role_changed about each member whose effective role moved with it.
Status EmitMemberRoleChanges(StoreTx& tx, const Catalog& catalog, EventOutbox& outbox, const CustomerRecord& org,
                             const std::string& old_role);

}  // namespace tally
