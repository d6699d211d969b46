#include "app/member_service.hpp"

#include "app/event_outbox.hpp"
#include "domain/text.hpp"

namespace tally {
namespace {

Error NoSuchCustomer(const CustomerId& id, const std::string& param) {
    return NotFound("no such customer: '" + id.str() + "'", param);
}

Status CheckUser(const std::string& user) {
    if (user.empty()) return MissingArgument("user is required", "user");
    if (IsBlank(user)) return InvalidArgument("user must not be blank", "user");
    if (user.size() > kUserIdBytesMax) {
        return InvalidArgument("user must be at most " + std::to_string(kUserIdBytesMax) + " bytes", "user");
    }
    return {};
}

Status CheckEmail(const std::string& email) {
    if (email.size() > kEmailBytesMax) {
        return InvalidArgument("email must be at most " + std::to_string(kEmailBytesMax) + " bytes", "email");
    }
    if (!email.empty() && email.find('@') == std::string::npos) return InvalidArgument("email is not an address", "email");
    return {};
}

Error Denied(const std::string& why) {
    return Error{ErrorCode::kPermissionDenied, why, "", ErrorReason::kNone};
}

int Owners(const std::vector<MemberRecord>& members) {
    int n = 0;
    for (const auto& m : members) n += m.role == MemberRole::kOwner ? 1 : 0;
    return n;
}

}  // namespace

Result<UserView> BuildUserView(StoreTx& tx, const Catalog& catalog, const std::string& user,
                               const CustomerId& instead_of, const std::string& role_instead) {
    UserView view;
    view.user_id = user;
    TALLY_ASSIGN_OR_RETURN(auto own, tx.customers().FindByExternalId(user));
    if (own && own->type == CustomerType::kIndividual) view.memberships.push_back({*own, MemberRole::kOwner});
    TALLY_ASSIGN_OR_RETURN(auto rows, tx.customers().ListMembershipsOfUser(user));
    for (const auto& m : rows) {
        TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(m.customer_id));
        if (customer) view.memberships.push_back({*customer, m.role});
    }
    std::vector<std::string> granted;
    for (const auto& m : view.memberships) {
        granted.push_back(m.customer.id == instead_of && !role_instead.empty() ? role_instead : m.customer.role);
    }
    view.effective_role = EffectiveRole(catalog, granted);
    return view;
}

Status EmitMemberRoleChanges(StoreTx& tx, const Catalog& catalog, EventOutbox& outbox, const CustomerRecord& org,
                             const std::string& old_role) {
    if (org.type != CustomerType::kOrganization) return {};
    TALLY_ASSIGN_OR_RETURN(auto members, tx.customers().ListMembers(org.id));
    for (const auto& m : members) {
        TALLY_ASSIGN_OR_RETURN(auto before, BuildUserView(tx, catalog, m.user_id, org.id, old_role));
        TALLY_ASSIGN_OR_RETURN(auto after, BuildUserView(tx, catalog, m.user_id));
        if (before.effective_role == after.effective_role) continue;
        TALLY_TRY(outbox.Emit(tx, "customer.role_changed", "user:" + m.user_id, org.id.str(),
                              outbox.renderer().User(after), {{"effective_role", before.effective_role}}));
    }
    return {};
}

MemberService::MemberService(Store& store, BillingService& billing, const Clock& clock, const SecretHasher& hasher)
    : store_(store), billing_(billing), clock_(clock), hasher_(hasher) {}

Result<CustomerRecord> MemberService::Organization(StoreTx& tx, const CustomerId& id) {
    TALLY_ASSIGN_OR_RETURN(auto customer, tx.customers().Get(id));
    if (!customer) return NoSuchCustomer(id, "id");
    if (customer->type != CustomerType::kOrganization) {
        return WithReason(InvalidArgument("customer " + id.str() +
                                              " is an individual: only organization customers have members",
                                          "id"),
                          ErrorReason::kCustomerNotOrganization);
    }
    return std::move(*customer);
}

Status MemberService::EmitMember(StoreTx& tx, std::string_view type, const MemberRecord& member) {
    EventOutbox* outbox = billing_.outbox();
    if (!outbox) return {};
    return outbox->Emit(tx, type, "member:" + member.customer_id.str() + ":" + member.user_id, member.customer_id.str(),
                        outbox->renderer().Member(member));
}

Status MemberService::EmitIfEffectiveRoleMoved(StoreTx& tx, const std::string& user, const std::string& before,
                                               const CustomerId& cause, Timestamp) {
    EventOutbox* outbox = billing_.outbox();
    if (!outbox) return {};
    TALLY_ASSIGN_OR_RETURN(auto after, BuildUserView(tx, billing_.catalog(), user));
    if (after.effective_role == before) return {};
    return outbox->Emit(tx, "customer.role_changed", "user:" + user, cause.str(), outbox->renderer().User(after),
                        {{"effective_role", before}});
}

Result<MemberRecord> MemberService::Add(StoreTx& tx, const CustomerId& customer, const std::string& user,
                                        const std::string& email, MemberRole role,
                                        std::optional<MemberRole> actor_role, const std::string& actor) {
    TALLY_TRY(CheckUser(user));
    TALLY_TRY(CheckEmail(email));
    TALLY_ASSIGN_OR_RETURN(auto org, Organization(tx, customer));
    if (actor_role && !MayChangeMembership(*actor_role, std::nullopt, role)) {
        return Denied("a customer session of a " + std::string(MemberRoleName(*actor_role)) + " cannot add " +
                      (role == MemberRole::kOwner ? "an owner" : "members"));
    }
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.customers().GetMember(customer, user));
    if (existing) {
        return Error{ErrorCode::kConflict, "user " + user + " is already a member of " + customer.str(), "user",
                     ErrorReason::kResourceAlreadyExists};
    }
    TALLY_ASSIGN_OR_RETURN(auto members, tx.customers().ListMembers(customer));
    if (members.size() >= kOrganizationMembersMax) {
        return Error{ErrorCode::kConflict,
                     "an organization has at most " + std::to_string(kOrganizationMembersMax) + " members", "user",
                     ErrorReason::kResourceLimitExceeded};
    }
    if (seat_check_) TALLY_TRY(seat_check_(tx, customer));
    const Timestamp now = clock_.Now();
    TALLY_ASSIGN_OR_RETURN(auto before, BuildUserView(tx, billing_.catalog(), user));
    MemberRecord m{customer, user, email, role, now, now};
    TALLY_TRY(tx.customers().InsertMember(m));
    TALLY_TRY(tx.audit().Append({0, customer, now, "member_added", "", std::string(MemberRoleName(role)), actor,
                                 "user=" + user}));
    TALLY_TRY(EmitMember(tx, "customer.member_added", m));
    TALLY_TRY(EmitIfEffectiveRoleMoved(tx, user, before.effective_role, org.id, now));
    return m;
}

Result<MemberRecord> MemberService::Update(StoreTx& tx, const CustomerId& customer, const std::string& user,
                                           std::optional<MemberRole> role, std::optional<std::string> email,
                                           std::optional<MemberRole> actor_role, const std::string& actor) {
    if (email) TALLY_TRY(CheckEmail(*email));
    TALLY_ASSIGN_OR_RETURN(auto org, Organization(tx, customer));
    (void)org;
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.customers().GetMember(customer, user));
    if (!existing) return NotFound("user '" + user + "' is not a member of " + customer.str(), "user");
    const MemberRole to = role.value_or(existing->role);
    if (actor_role && !MayChangeMembership(*actor_role, existing->role, to)) {
        return Denied("a customer session of a " + std::string(MemberRoleName(*actor_role)) +
                      " cannot change this membership");
    }
    TALLY_ASSIGN_OR_RETURN(auto members, tx.customers().ListMembers(customer));
    TALLY_TRY(CheckOwnerRemains(Owners(members), existing->role, to));
    MemberRecord m = *existing;
    m.role = to;
    if (email) m.email = *email;
    if (m.role == existing->role && m.email == existing->email) return m;
    m.updated_at = clock_.Now();
    TALLY_TRY(tx.customers().UpdateMember(m));
    TALLY_TRY(tx.audit().Append({0, customer, m.updated_at, "member_updated", MemberRoleName(existing->role),
                                 MemberRoleName(m.role), actor, "user=" + user}));
    TALLY_TRY(EmitMember(tx, "customer.member_updated", m));
    return m;
}

Result<MemberRecord> MemberService::Remove(StoreTx& tx, const CustomerId& customer, const std::string& user,
                                           std::optional<MemberRole> actor_role, const std::string& actor) {
    TALLY_ASSIGN_OR_RETURN(auto org, Organization(tx, customer));
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.customers().GetMember(customer, user));
    if (!existing) return NotFound("user '" + user + "' is not a member of " + customer.str(), "user");
    if (actor_role && !MayChangeMembership(*actor_role, existing->role, std::nullopt)) {
        return Denied("a customer session of a " + std::string(MemberRoleName(*actor_role)) +
                      " cannot remove this member");
    }
    TALLY_ASSIGN_OR_RETURN(auto members, tx.customers().ListMembers(customer));
    TALLY_TRY(CheckOwnerRemains(Owners(members), existing->role, std::nullopt));
    const Timestamp now = clock_.Now();
    TALLY_ASSIGN_OR_RETURN(auto before, BuildUserView(tx, billing_.catalog(), user));
    TALLY_TRY(tx.customers().DeleteMember(customer, user));
    TALLY_TRY(tx.audit().Append({0, customer, now, "member_removed", MemberRoleName(existing->role), "", actor,
                                 "user=" + user}));
    TALLY_TRY(EmitMember(tx, "customer.member_removed", *existing));
    TALLY_TRY(EmitIfEffectiveRoleMoved(tx, user, before.effective_role, org.id, now));
    return *existing;
}

Result<std::vector<MemberRecord>> MemberService::List(const CustomerId& customer) {
    std::vector<MemberRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto org, Organization(tx, customer));
        (void)org;
        TALLY_ASSIGN_OR_RETURN(out, tx.customers().ListMembers(customer));
        return {};
    }));
    return out;
}

Result<MemberRecord> MemberService::Get(const CustomerId& customer, const std::string& user) {
    std::optional<MemberRecord> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto org, Organization(tx, customer));
        (void)org;
        TALLY_ASSIGN_OR_RETURN(out, tx.customers().GetMember(customer, user));
        return {};
    }));
    if (!out) return NotFound("user '" + user + "' is not a member of " + customer.str(), "user");
    return std::move(*out);
}

Result<std::optional<MemberRole>> MemberService::RoleOf(StoreTx& tx, const CustomerId& customer,
                                                        const std::string& user) {
    TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
    if (!c) return std::optional<MemberRole>();
    if (c->type == CustomerType::kIndividual) {
        return c->external_id == user && !user.empty() ? std::optional<MemberRole>(MemberRole::kOwner) : std::nullopt;
    }
    TALLY_ASSIGN_OR_RETURN(auto m, tx.customers().GetMember(customer, user));
    return m ? std::optional<MemberRole>(m->role) : std::nullopt;
}

Result<std::optional<MemberRole>> MemberService::RoleOf(const CustomerId& customer, const std::string& user) {
    std::optional<MemberRole> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, RoleOf(tx, customer, user));
        return {};
    }));
    return out;
}

Result<UserView> MemberService::GetUser(const std::string& user) {
    std::optional<UserView> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, BuildUserView(tx, billing_.catalog(), user));
        return {};
    }));
    if (out->memberships.empty()) return NotFound("no customer knows user '" + user + "'", "user");
    return std::move(*out);
}

Result<CreatedCustomerSession> MemberService::CreateSession(StoreTx& tx, const CustomerId& customer,
                                                            const std::string& user, std::optional<int64_t> expires_in,
                                                            const std::string& actor) {
    TALLY_TRY(CheckUser(user));
    const int64_t seconds = expires_in.value_or(kCustomerSessionSecondsDefault);
    if (seconds < kCustomerSessionSecondsMin || seconds > kCustomerSessionSecondsMax) {
        return InvalidArgument("expires_in must be between " + std::to_string(kCustomerSessionSecondsMin) + " and " +
                                   std::to_string(kCustomerSessionSecondsMax) + " seconds",
                               "expires_in");
    }
    TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(customer));
    if (!c) return NoSuchCustomer(customer, "customer");
    TALLY_ASSIGN_OR_RETURN(auto role, RoleOf(tx, customer, user));
    if (!role) {
        const std::string why = c->type == CustomerType::kOrganization
                                    ? "is not a member of organization " + customer.str()
                                    : "is not the user of individual customer " + customer.str() +
                                          " (its external_id)";
        return WithReason(InvalidArgument("user '" + user + "' " + why, "user"), ErrorReason::kUserNotMember);
    }
    const Timestamp now = clock_.Now();
    CreatedCustomerSession out;
    out.token = std::string(kCustomerSessionTokenPrefix);
    out.token += hasher_.RandomHex(kCustomerSessionSecretBytes);
    out.record = CustomerSessionRecord{NewId("csn_"), hasher_.Sha256Hex(out.token), customer.str(), user, now,
                                       now.PlusSeconds(seconds), std::nullopt};
    TALLY_TRY(tx.keys().InsertCustomerSession(out.record));
    TALLY_TRY(tx.audit().Append({0, customer, now, "customer_session_created", "", out.record.id, actor,
                                 "user=" + user + " expires_in=" + std::to_string(seconds)}));
    return out;
}

Result<CustomerSessionRecord> MemberService::RevokeSession(StoreTx& tx, const std::string& id,
                                                           const std::string& actor) {
    TALLY_ASSIGN_OR_RETURN(auto s, tx.keys().GetCustomerSession(id));
    if (!s) return NotFound("no such customer session: '" + id + "'", "id");
    if (s->revoked_at) return std::move(*s);
    const Timestamp now = clock_.Now();
    TALLY_TRY(tx.keys().RevokeCustomerSession(id, now));
    TALLY_TRY(tx.audit().Append({0, CustomerId(s->customer_id), now, "customer_session_revoked", "", id, actor,
                                 "user=" + s->user_id}));
    s->revoked_at = now;
    return std::move(*s);
}

Result<SessionGrant> MemberService::Authenticate(std::string_view token) {
    const std::string hash = hasher_.Sha256Hex(token);
    std::optional<CustomerSessionRecord> s;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(s, tx.keys().FindCustomerSessionByHash(hash));
        return {};
    }));
    if (!s) {
        return Error{ErrorCode::kUnauthenticated, "Invalid customer session token.", "", ErrorReason::kNone};
    }
    if (s->revoked_at) {
        return Error{ErrorCode::kUnauthenticated, "This customer session was revoked.", "",
                     ErrorReason::kCustomerSessionRevoked};
    }
    if (clock_.Now() >= s->expires_at) {
        return Error{ErrorCode::kUnauthenticated, "This customer session has expired: start a new one.", "",
                     ErrorReason::kCustomerSessionExpired};
    }
    return SessionGrant{s->id, CustomerId(s->customer_id), s->user_id};
}

Result<int> MemberService::PruneExpiredSessions() {
    int pruned = 0;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(pruned,
                               tx.keys().PruneCustomerSessions(clock_.Now().PlusSeconds(-kCustomerSessionRetentionSeconds)));
        return {};
    }));
    return pruned;
}

}  // namespace tally
