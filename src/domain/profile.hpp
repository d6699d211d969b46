#pragma once
// The customer's identity profile (seeds 000/001): sign-in provider, company, whether the email is verified, and
// Stripe-style metadata, and what of it Tally keeps on the Stripe customer. Pure rules, table-tested in
// membership_test.cpp (metadata limits) and profile_test.cpp (the Stripe customer's metadata).
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "domain/result.hpp"

namespace tally {

using Metadata = std::map<std::string, std::string>;

// Stripe's metadata limits (docs.stripe.com/metadata: "up to 50 keys, with key names up to 40 characters long and
// values up to 500 characters long"; keys cannot contain square brackets). The 50 keys are the Stripe customer's
// total: Tally keeps kMetadataReservedKeys of them for its own fields, so an app may set the rest.
constexpr size_t kStripeMetadataKeysMax = 50;
constexpr size_t kMetadataKeyCharsMax = 40;
constexpr size_t kMetadataValueCharsMax = 500;
constexpr size_t kAuthProviderCharsMax = 40;
constexpr size_t kCompanyBytesMax = 255;

/// The keys Tally itself writes on the Stripe customer's metadata; an app's metadata may not use them.
std::span<const std::string_view> MetadataReservedKeys();
/// How many keys an app's metadata may hold: Stripe's 50 minus the reserved ones.
size_t MetadataKeysMax();

/// One metadata change as Stripe takes it: a key set to a value, or removed (value "" in Stripe's API).
struct MetadataUpdate {
    bool clear_all = false;  // `"metadata": ""`: remove every key first
    std::vector<std::pair<std::string, std::string>> set;  // value "" removes the key
};

/// |current| after |update|, checked against Stripe's limits: kInvalidArgument with param "metadata" for too many
/// keys, "metadata[<key>]" for a key that is empty, too long, holds '[' or ']', is reserved, or whose value is too
/// long. Lengths count Unicode code points, as Stripe's characters.
Result<Metadata> ApplyMetadata(const Metadata& current, const MetadataUpdate& update);

/// |metadata| as JSON object text ({"k":"v"}, keys sorted, control characters, '"' and '\\' escaped), the form both
/// stores keep it in, so SQL can filter by a key (SQLite's json_each, PostgreSQL's jsonb).
std::string MetadataToJson(const Metadata& metadata);
/// The inverse of MetadataToJson (any flat JSON object of strings); text that is not one reads as empty, since row
/// readers never fail.
Metadata MetadataFromJson(std::string_view text);

/// The profile fields Tally writes on the Stripe customer besides the app's metadata.
struct StripeProfileFields {
    std::string customer_id;    // Tally's cust_...
    std::string external_id;
    std::string auth_provider;  // "" when unknown
    std::string company;
    bool email_verified = false;
};

/// The metadata the Stripe customer should hold: the app's |metadata| plus Tally's reserved keys (external_id,
/// tally_customer_id, and tally_auth_provider / tally_company / tally_email_verified when set), so a team reading
/// the Stripe dashboard sees who the customer is. Stripe's 50-key limit holds by construction (MetadataKeysMax).
Metadata StripeCustomerMetadata(const Metadata& metadata, const StripeProfileFields& fields);

/// The parameters that turn Stripe's |current| metadata into |desired|: each key whose value differs set to its
/// new value, each key only |current| has set to "" (Stripe's way to remove a key: docs.stripe.com/metadata,
/// "unset a key by setting its value to an empty string"). Empty when they are equal.
std::vector<std::pair<std::string, std::string>> MetadataPatch(const Metadata& current, const Metadata& desired);

/// Checks an auth provider name: 1..kAuthProviderCharsMax of [a-z0-9_] ("google", "github", "okta", "azure_ad",
/// "linkedin", "airtable", "password", or an app's own). kInvalidArgument (param "auth_provider") otherwise.
Status ValidateAuthProvider(std::string_view provider);

}  // namespace tally
