#pragma once
// An app user as Tally knows them: the customers they belong to and the effective role those grant
// (GET /v1/users/{user}, and the object of customer.role_changed events about a user).
#include <string>
#include <vector>

#include "app/store.hpp"
#include "domain/membership.hpp"

namespace tally {

/// One customer an app user belongs to: an organization through its members, or their own individual customer
/// (the one whose external_id is the user's id), which makes them its owner.
struct UserMembership {
    CustomerRecord customer;
    MemberRole role = MemberRole::kMember;
};

/// An app user as Tally knows them.
struct UserView {
    std::string user_id;
    std::string effective_role;  // EffectiveRole over the memberships' customers' roles
    std::vector<UserMembership> memberships;
};

}  // namespace tally
