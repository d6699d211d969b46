#pragma once
// Organizations and their members (seed 002): who may change a customer's billing, the last-owner rule, and the
// effective role of an app user across every customer they belong to. Pure rules, table-tested in
// membership_test.cpp.
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "domain/catalog.hpp"
#include "domain/result.hpp"

namespace tally {

/// A customer is one person's account or an organization's (seed 002: "user" and "organization" subscriptions).
enum class CustomerType { kIndividual, kOrganization };
/// "individual" | "organization"; kInvalidArgument (param |param|) otherwise.
Result<CustomerType> ParseCustomerType(std::string_view text, const std::string& param = "type");
const char* CustomerTypeName(CustomerType type);

/// A member's role inside an organization (seed 002: owner, admin, member), highest first.
enum class MemberRole { kOwner, kAdmin, kMember };
/// "owner" | "admin" | "member"; kInvalidArgument (param "role") otherwise.
Result<MemberRole> ParseMemberRole(std::string_view text);
const char* MemberRoleName(MemberRole role);

/// Whether a member in |role| may change the customer's billing: subscribe, change or cancel a plan, pay, manage
/// members. Seed 002: "owners and admins can manage the organization's subscription"; members only read.
bool MayManageBilling(MemberRole role);

/// Whether an actor with |actor| may give, change or take away membership |from| -> |to| (nullopt: none, i.e. an
/// add or a removal). Managing roles (owner, admin) may manage members; only an owner may touch an owner's
/// membership or make someone an owner, so an admin cannot promote themselves past the people who pay.
bool MayChangeMembership(MemberRole actor, std::optional<MemberRole> from, std::optional<MemberRole> to);

/// The last-owner rule: an organization keeps at least one owner. |owners| is how many it has now; the change takes
/// membership |from| -> |to| (nullopt: removed). kConflict (reason kLastOwner, param "role") when it would leave none.
Status CheckOwnerRemains(int owners, std::optional<MemberRole> from, std::optional<MemberRole> to);

/// The effective role of an app user: the highest-ranked catalog role among the roles |granted| by the customers
/// they belong to (their own and their organizations'), so every member of a paying organization has its plan's
/// role (seeds 000/002: member -> professional). The catalog's default role when |granted| is empty; a role the
/// catalog does not know ranks below every known one.
std::string EffectiveRole(const Catalog& catalog, std::span<const std::string> granted);

}  // namespace tally
