#pragma once
#include <string_view>

namespace tally::sandbox {

/// Stripe's example objects (stripe/openapi fixtures3.json, as in ../shared/stripe/), embedded at build time.
std::string_view StripeFixturesJson();

}  // namespace tally::sandbox
