#include "domain/membership.hpp"

#include <gtest/gtest.h>

#include <vector>

#include "domain/profile.hpp"

namespace tally {
namespace {

using R = MemberRole;
constexpr std::optional<R> kNone = std::nullopt;

Catalog MakeCatalog() {
    auto usd = Currency::Parse("usd").value();
    std::vector<Plan> plans = {
        {PlanId("free"), "Free", "member", 0, {}, {}, {}, 0},
        {PlanId("pro"), "Pro", "professional", 0,
         {{{BillingInterval::Unit::kMonth, 1}, Money(3000, usd), "pro_monthly", {}}}, {}, {}, 0},
        {PlanId("scale"), "Scale", "enterprise", 0,
         {{{BillingInterval::Unit::kMonth, 1}, Money(9000, usd), "scale_monthly", {}}}, {}, {}, 0},
    };
    return Catalog::Create({"member", "professional", "enterprise"}, plans, PlanId("free")).value();
}

TEST(MembershipTest, RolesParseAndName) {
    for (R role : {R::kOwner, R::kAdmin, R::kMember}) EXPECT_EQ(ParseMemberRole(MemberRoleName(role)).value(), role);
    for (const char* bad : {"", "Owner", "billing", "owner "}) {
        auto r = ParseMemberRole(bad);
        ASSERT_FALSE(r.ok()) << bad;
        EXPECT_EQ(r.error().param, "role");
    }
    EXPECT_EQ(ParseCustomerType("organization").value(), CustomerType::kOrganization);
    EXPECT_EQ(ParseCustomerType("individual").value(), CustomerType::kIndividual);
    EXPECT_FALSE(ParseCustomerType("team").ok());
}

// Seed 002: owners and admins manage the subscription, members only read.
TEST(MembershipTest, WhoManagesBilling) {
    EXPECT_TRUE(MayManageBilling(R::kOwner));
    EXPECT_TRUE(MayManageBilling(R::kAdmin));
    EXPECT_FALSE(MayManageBilling(R::kMember));
}

TEST(MembershipTest, WhoChangesMemberships) {
    struct Case { R actor; std::optional<R> from, to; bool allowed; };
    const Case cases[] = {
        {R::kOwner, kNone, R::kOwner, true},      // an owner adds a co-owner
        {R::kOwner, R::kOwner, kNone, true},      // and removes one (the last-owner rule is separate)
        {R::kOwner, R::kMember, R::kAdmin, true},
        {R::kAdmin, kNone, R::kMember, true},     // an admin adds members and admins
        {R::kAdmin, kNone, R::kAdmin, true},
        {R::kAdmin, R::kMember, kNone, true},
        {R::kAdmin, kNone, R::kOwner, false},     // but never makes an owner
        {R::kAdmin, R::kAdmin, R::kOwner, false}, // (not even themselves)
        {R::kAdmin, R::kOwner, R::kMember, false},// nor demotes or removes one
        {R::kAdmin, R::kOwner, kNone, false},
        {R::kMember, kNone, R::kMember, false},   // members change nothing
        {R::kMember, R::kMember, kNone, false},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(MayChangeMembership(c.actor, c.from, c.to), c.allowed)
            << MemberRoleName(c.actor) << " " << (c.from ? MemberRoleName(*c.from) : "-") << "->"
            << (c.to ? MemberRoleName(*c.to) : "-");
    }
}

TEST(MembershipTest, LastOwnerStays) {
    struct Case { int owners; std::optional<R> from, to; bool ok; };
    const Case cases[] = {
        {1, R::kOwner, kNone, false},       // removing the only owner
        {1, R::kOwner, R::kAdmin, false},   // demoting them
        {1, R::kOwner, R::kOwner, true},    // a no-op change
        {2, R::kOwner, kNone, true},        // a co-owner remains
        {2, R::kOwner, R::kMember, true},
        {1, R::kAdmin, kNone, true},        // non-owners come and go
        {1, kNone, R::kMember, true},
        {0, kNone, R::kOwner, true},        // the first owner joins
    };
    for (const auto& c : cases) {
        const Status s = CheckOwnerRemains(c.owners, c.from, c.to);
        EXPECT_EQ(s.ok(), c.ok) << c.owners;
        if (!s.ok()) {
            EXPECT_EQ(s.error().code, ErrorCode::kConflict);
            EXPECT_EQ(s.error().reason, ErrorReason::kLastOwner);
        }
    }
}

// The highest catalog role among the customers a user belongs to; seeds 000/002: member -> professional for every
// member of a paying organization.
TEST(MembershipTest, EffectiveRoleIsTheHighestGranted) {
    const Catalog catalog = MakeCatalog();
    struct Case { std::vector<std::string> granted; const char* effective; };
    const Case cases[] = {
        {{}, "member"},
        {{"member"}, "member"},
        {{"member", "professional"}, "professional"},
        {{"enterprise", "member", "professional"}, "enterprise"},
        {{"retired_role", "member"}, "member"},  // unknown roles rank below all known
    };
    for (const auto& c : cases) EXPECT_EQ(EffectiveRole(catalog, c.granted), c.effective);
}

// Stripe's metadata rules (docs.stripe.com/metadata): 50 keys, 40-char keys, 500-char values, no brackets in keys,
// "" unsets a key, metadata="" unsets all.
TEST(ProfileTest, MetadataMergesAndUnsetsAsStripe) {
    const Metadata current = {{"plan_source", "ads"}, {"team", "blue"}};
    auto merged = ApplyMetadata(current, {false, {{"team", "red"}, {"plan_source", ""}, {"seats", "5"}}});
    ASSERT_TRUE(merged.ok());
    EXPECT_EQ(*merged, (Metadata{{"seats", "5"}, {"team", "red"}}));
    auto cleared = ApplyMetadata(current, {true, {}});
    ASSERT_TRUE(cleared.ok());
    EXPECT_TRUE(cleared->empty());
    auto replaced = ApplyMetadata(current, {true, {{"a", "1"}}});
    EXPECT_EQ(*replaced, (Metadata{{"a", "1"}}));
}

TEST(ProfileTest, MetadataLimits) {
    struct Case { std::string key; std::string value; const char* param; };
    const std::string key40(40, 'k');
    const Case cases[] = {
        {std::string(41, 'k'), "v", "metadata[kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk]"},
        {"a[b]", "v", "metadata[a[b]]"},
        {"x", std::string(501, 'v'), "metadata[x]"},
        {"external_id", "u1", "metadata[external_id]"},  // reserved for Tally's own use
        {"", "v", "metadata"},
    };
    for (const auto& c : cases) {
        auto r = ApplyMetadata({}, {false, {{c.key, c.value}}});
        ASSERT_FALSE(r.ok()) << c.key;
        EXPECT_EQ(r.error().param, c.param);
    }
    EXPECT_TRUE(ApplyMetadata({}, {false, {{key40, std::string(500, 'v')}}}).ok());
    // Characters, not bytes: 500 two-byte characters fit.
    std::string wide;
    for (int i = 0; i < 500; ++i) wide += "\xC3\xA9";
    EXPECT_TRUE(ApplyMetadata({}, {false, {{"k", wide}}}).ok());
    MetadataUpdate many;
    for (size_t i = 0; i < MetadataKeysMax(); ++i) many.set.emplace_back("k" + std::to_string(i), "v");
    EXPECT_TRUE(ApplyMetadata({}, many).ok());
    many.set.emplace_back("one_more", "v");
    auto over = ApplyMetadata({}, many);
    ASSERT_FALSE(over.ok());
    EXPECT_EQ(over.error().param, "metadata");
    EXPECT_EQ(MetadataKeysMax() + MetadataReservedKeys().size(), kStripeMetadataKeysMax);
}

TEST(ProfileTest, AuthProviders) {
    for (const char* ok : {"google", "github", "okta", "azure_ad", "linkedin", "airtable", "password", "saml2"}) {
        EXPECT_TRUE(ValidateAuthProvider(ok).ok()) << ok;
    }
    for (const char* bad : {"", "Google", "azure-ad", "a b", "x\xC3\xA9"}) {
        auto s = ValidateAuthProvider(bad);
        ASSERT_FALSE(s.ok()) << bad;
        EXPECT_EQ(s.error().param, "auth_provider");
    }
    EXPECT_FALSE(ValidateAuthProvider(std::string(41, 'a')).ok());
}

}  // namespace
}  // namespace tally

namespace tally {
namespace {
TEST(ProfileTest, MetadataJsonRoundTrips) {
    const Metadata m = {{"a", "1"}, {"quote\"d", "back\\slash"}, {"ctl", std::string("x\n\x01y")}, {"utf8", "\xC3\xA9\xE2\x82\xAC"}};
    const std::string json = MetadataToJson(m);
    EXPECT_EQ(MetadataToJson({}), "{}");
    EXPECT_EQ(MetadataFromJson(json), m);
    EXPECT_EQ(json.find('\n'), std::string::npos);
    // What another JSON writer may produce (PostgreSQL's jsonb, a hand edit): spaces, \u escapes, surrogate pairs.
    EXPECT_EQ(MetadataFromJson(R"( { "k" : "\u00e9\ud83d\ude00" , "n":"\t" } )"),
              (Metadata{{"k", "\xC3\xA9\xF0\x9F\x98\x80"}, {"n", "\t"}}));
    EXPECT_TRUE(MetadataFromJson("not json").empty());
    EXPECT_TRUE(MetadataFromJson(R"({"k":1})").empty());
}
}  // namespace
}  // namespace tally
