#include "domain/membership.hpp"

namespace tally {

Result<CustomerType> ParseCustomerType(std::string_view text, const std::string& param) {
    if (text == "individual") return CustomerType::kIndividual;
    if (text == "organization") return CustomerType::kOrganization;
    return InvalidArgument("type must be individual or organization", param);
}

const char* CustomerTypeName(CustomerType type) {
    return type == CustomerType::kOrganization ? "organization" : "individual";
}

Result<MemberRole> ParseMemberRole(std::string_view text) {
    if (text == "owner") return MemberRole::kOwner;
    if (text == "admin") return MemberRole::kAdmin;
    if (text == "member") return MemberRole::kMember;
    return InvalidArgument("role must be owner, admin or member", "role");
}

const char* MemberRoleName(MemberRole role) {
    switch (role) {
        case MemberRole::kOwner: return "owner";
        case MemberRole::kAdmin: return "admin";
        case MemberRole::kMember: return "member";
    }
    return "member";
}

bool MayManageBilling(MemberRole role) { return role == MemberRole::kOwner || role == MemberRole::kAdmin; }

bool MayChangeMembership(MemberRole actor, std::optional<MemberRole> from, std::optional<MemberRole> to) {
    if (!MayManageBilling(actor)) return false;
    const bool touches_owner = from == MemberRole::kOwner || to == MemberRole::kOwner;
    return !touches_owner || actor == MemberRole::kOwner;
}

Status CheckOwnerRemains(int owners, std::optional<MemberRole> from, std::optional<MemberRole> to) {
    const bool loses_owner = from == MemberRole::kOwner && to != MemberRole::kOwner;
    if (loses_owner && owners <= 1) {
        return Error{ErrorCode::kConflict,
                     "an organization must keep at least one owner: make another member an owner first", "role",
                     ErrorReason::kLastOwner};
    }
    return {};
}

std::string EffectiveRole(const Catalog& catalog, std::span<const std::string> granted) {
    std::string best = catalog.default_role();
    int best_rank = catalog.RoleRank(best);
    for (const auto& role : granted) {
        const int rank = catalog.RoleRank(role);
        if (rank > best_rank) {
            best = role;
            best_rank = rank;
        }
    }
    return best;
}

}  // namespace tally
