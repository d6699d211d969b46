#pragma once
// Loads the plan catalog (config/pricing.json) into a validated domain Catalog.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/value.hpp>

#include "domain/catalog.hpp"
#include "domain/credits.hpp"
#include "domain/flags.hpp"

namespace tally {

/// Parses catalog JSON. Shape:
///   {"roles": [lowest..highest], "default_plan": id, "plans": [{"id","name","role",
///    "prices": [{"lookup_key","interval":"month|year|week|day","interval_count"?,"unit_amount" (minor units),
///                "currency","stripe_price_id"?}], "features": {name: bool}, "limits": {name: int},
///    "credits_monthly"?: int}]}
/// Unknown keys are rejected. Errors are kInvalidArgument whose param is the JSON path, e.g. "plans[1].prices[0].currency".
Result<Catalog> ParseCatalogJson(std::string_view text);
/// One plan of a catalog file ({"id","name","role","prices","features","limits","credits_monthly"}), for the plans
/// API; errors name the field (".prices[0].currency").
Result<Plan> ParsePlanJson(const boost::json::value& plan);
/// One price ({"lookup_key","interval","interval_count","unit_amount","currency","stripe_price_id"}) at |path|.
Result<CatalogPrice> ParsePriceJson(const boost::json::value& price, const std::string& path);
/// The rollout flags a catalog file declares (the "flags" key; none without it), to seed the flags table:
///   "flags": {name: {"description"?, "enabled"? (false), "rollout_percentage"? (0..100, default 0)}}
/// Errors are kInvalidArgument whose param is the JSON path ("flags.billing_v2.rollout_percentage").
Result<std::vector<FeatureFlag>> ParseFlagsJson(std::string_view text);
/// The credits each priced action costs (the "credit_actions" key: {name: integer 1..2^53}; none without it).
/// Errors are kInvalidArgument whose param is the JSON path ("credit_actions.SEND_EMAIL").
Result<std::map<std::string, int64_t>> ParseCreditActionsJson(std::string_view text);
/// The credit bundles on sale (the "credit_bundles" key; none without it):
///   "credit_bundles": [{"id", "name", "credits" (1..2^53), "unit_amount" (minor units, > 0), "currency",
///                       "expires_in_days"? (1..3650; none: the credits roll over)}]
/// Errors are kInvalidArgument whose param is the JSON path ("credit_bundles[1].unit_amount").
Result<std::vector<CreditBundle>> ParseCreditBundlesJson(std::string_view text);
/// The text of the catalog file at |path|, or of the built-in default when |path| is empty; kNotFound if unreadable.
Result<std::string> ReadCatalogText(const std::string& path);
/// Reads and parses |path|; kNotFound if it cannot be read.
Result<Catalog> LoadCatalogFile(const std::string& path);
/// config/pricing.json as it was at build time, compiled into the binary so `tally serve` runs anywhere.
std::string_view DefaultCatalogJson();
/// LoadCatalogFile(|path|), or the built-in default catalog when |path| is empty.
Result<Catalog> LoadCatalog(const std::string& path);

}  // namespace tally
