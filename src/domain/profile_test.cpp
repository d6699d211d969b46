// What Tally keeps on the Stripe customer's metadata, and the update that gets it there.
#include "domain/profile.hpp"

#include <gtest/gtest.h>

namespace tally {
namespace {

using Patch = std::vector<std::pair<std::string, std::string>>;

TEST(StripeCustomerMetadata, AddsTheReservedKeysThatAreSet) {
    struct Case {
        const char* name;
        Metadata app;
        StripeProfileFields fields;
        Metadata want;
    };
    const Case cases[] = {
        {"bare", {}, {"cust_1", "", "", "", false}, {{"tally_customer_id", "cust_1"}}},
        {"full profile",
         {{"tier", "gold"}},
         {"cust_1", "user_1", "okta", "Acme", true},
         {{"tier", "gold"},
          {"external_id", "user_1"},
          {"tally_customer_id", "cust_1"},
          {"tally_auth_provider", "okta"},
          {"tally_company", "Acme"},
          {"tally_email_verified", "true"}}},
        // A reserved key in stored metadata (written before the rule) never reaches Stripe as the app's value.
        {"reserved key in app metadata", {{"tally_company", "spoofed"}}, {"cust_1", "", "", "", false},
         {{"tally_customer_id", "cust_1"}}},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(StripeCustomerMetadata(c.app, c.fields), c.want) << c.name;
    }
    // Stripe's limit holds with every app key used and every reserved key set.
    Metadata full;
    for (size_t i = 0; i < MetadataKeysMax(); ++i) full["k" + std::to_string(i)] = "v";
    EXPECT_EQ(StripeCustomerMetadata(full, {"cust_1", "u", "okta", "Acme", true}).size(), kStripeMetadataKeysMax);
    // A company longer than a metadata value is cut to Stripe's limit.
    EXPECT_EQ(StripeCustomerMetadata({}, {"cust_1", "", "", std::string(600, 'c'), false}).at("tally_company").size(),
              kMetadataValueCharsMax);
}

TEST(MetadataPatch, SetsWhatDiffersAndUnsetsWhatIsGone) {
    struct Case {
        const char* name;
        Metadata current;
        Metadata desired;
        Patch want;
    };
    const Case cases[] = {
        {"equal", {{"a", "1"}}, {{"a", "1"}}, {}},
        {"both empty", {}, {}, {}},
        {"added", {}, {{"a", "1"}}, {{"a", "1"}}},
        {"changed", {{"a", "1"}}, {{"a", "2"}}, {{"a", "2"}}},
        {"removed", {{"a", "1"}, {"b", "2"}}, {{"a", "1"}}, {{"b", ""}}},
        {"mixed", {{"a", "1"}, {"b", "2"}}, {{"a", "9"}, {"c", "3"}}, {{"a", "9"}, {"c", "3"}, {"b", ""}}},
    };
    for (const auto& c : cases) EXPECT_EQ(MetadataPatch(c.current, c.desired), c.want) << c.name;
}

}  // namespace
}  // namespace tally
