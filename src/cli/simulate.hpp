#pragma once
#include <cstdint>
#include <string>

namespace tally::cli {

struct SimulateOptions {
    int customers = 1000;
    int months = 12;
    uint64_t seed = 1;
    std::string db = "./simulation.db";  // must not exist yet
    std::string catalog;  // empty: the built-in default catalog (config/pricing.json at build time)
    std::string start = "2025-01-01T00:00:00Z";  // the test clock's first instant
};

/// Runs a reproducible population (signups, trials, upgrades, downgrades, cancellations, failed payments and
/// recoveries) through an in-process Stripe sandbox's test clock into a new Tally database at |options.db|,
/// applying every event with the webhook processor, then prints a summary. The same seed gives the same summary
/// (the elapsed time aside). Returns the process exit code.
int Simulate(const SimulateOptions& options);

}  // namespace tally::cli
