// The in-process half of bench/credits (issue 13): durable deductions through the same code the HTTP route runs —
// CreditService::Deduct inside a WriteGroupCommitter group (one durable SQLite commit, synchronous=FULL, for the
// writes that arrive together, each in its own savepoint), with the auto-purchase spend listener and the event
// outbox as `tally serve` wires them — driven by a closed loop of --concurrency deductions in flight, each counted
// when its commit is durable. Prints
//   RESULT counted=<durable deductions> elapsed_us=<µs> p50_us=<submit to durable> p99_us=<...> spent=<credits>
// where spent is what left the balances afterwards (it must equal counted).
// Usage: credits_bench --db <new file> [--seconds 6] [--concurrency 64] [--customers 100]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include "adapters/config/catalog_json.hpp"
#include "adapters/http/json_views.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "adapters/stripe/stripe_api.hpp"
#include "adapters/system_clock.hpp"
#include "app/billing_service.hpp"
#include "app/checkout_service.hpp"
#include "app/credit_purchases.hpp"
#include "app/credit_service.hpp"
#include "app/event_outbox.hpp"
#include "app/write_group.hpp"

namespace {

using namespace tally;
using Steady = std::chrono::steady_clock;

int Fail(const std::string& what) {
    std::cerr << "credits_bench: " << what << "\n";
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    std::string db;
    int seconds = 6;
    int concurrency = 64;
    int customers = 100;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        const std::string value = argv[i + 1];
        if (flag == "--db") db = value;
        else if (flag == "--seconds") seconds = std::stoi(value);
        else if (flag == "--concurrency") concurrency = std::stoi(value);
        else if (flag == "--customers") customers = std::stoi(value);
        else return Fail("unknown flag " + flag);
    }
    if (db.empty()) return Fail("--db <path> is required");
    auto store = sqlite::SqliteStore::Open(db, {});
    if (!store.ok()) return Fail(store.error().message);
    auto catalog = LoadCatalog("");
    if (!catalog.ok()) return Fail(catalog.error().message);
    auto bundles = ParseCreditBundlesJson(DefaultCatalogJson());
    if (!bundles.ok()) return Fail(bundles.error().message);
    SystemClock clock;
    http::JsonObjectRenderer renderer;
    EventOutbox outbox(renderer, clock);
    BillingService billing(**store, *catalog, clock, BillingConfig{}, &outbox);
    CreditService credits(**store, clock, {}, &billing);
    stripe::UnconfiguredStripeApi stripe_api;
    CheckoutService checkout(**store, billing, stripe_api, clock, CheckoutConfig{});
    CreditPurchaseService purchases(**store, credits, checkout, stripe_api, clock, *bundles, &outbox);
    credits.SetSpendListener([&purchases](StoreTx& tx, const CustomerId& customer, const CreditBalance& after) {
        return purchases.OnSpent(tx, customer, after);
    });

    std::vector<CustomerId> ids;
    Status setup = (*store)->Write([&](StoreTx& tx) -> Status {
        for (int i = 0; i < customers; ++i) {
            CustomerInput in;
            TALLY_ASSIGN_OR_RETURN(auto created, billing.CreateCustomer(tx, "bench_" + std::to_string(i), in));
            ids.push_back(created.first.customer.id);
            TALLY_ASSIGN_OR_RETURN(auto g, credits.Grant(tx, {ids.back(), "seed_" + std::to_string(i), GrantType::kBundle,
                                                              1'000'000'000'000, std::nullopt, std::nullopt, "", "bench"}));
            (void)g;
        }
        return {};
    });
    if (!setup.ok()) return Fail(setup.error().message);

    WriteGroupCommitter commits(WriteGroupSink(**store), kWriteGroupMax, kWriteGroupQueueMax);
    std::mutex mu;
    std::condition_variable idle;
    std::vector<int64_t> latencies_us;
    std::atomic<int64_t> counted{0}, refused{0}, next{0};
    int in_flight = 0;
    const auto start = Steady::now();
    const auto stop = start + std::chrono::seconds(seconds);
    std::function<void()> submit = [&] {
        const int64_t n = next++;
        const CustomerId customer = ids[static_cast<size_t>(n) % ids.size()];
        const auto sent = Steady::now();
        // As POST /v1/credits/deduct submits it: the group's deductions run as one batch.
        auto item = std::make_shared<PendingDeduction>();
        item->in = CreditDeductInput{customer, "t_" + std::to_string(n), 1, "", "", "bench"};
        GroupedWrite write{{"credits:" + customer.str()}, nullptr};
        write.batch = &credits.deductions();
        write.item = item;
        commits.Submit(std::move(write),
                       [&, sent, item](Result<GroupedWriteOutcome> r) {
                           const auto done = Steady::now();
                           const bool ok = r.ok() && r->status.ok() && item->out && item->out->ok();
                           (ok ? counted : refused)++;
                           bool more = false;
                           {
                               std::lock_guard lock(mu);
                               if (ok && done < stop) {
                                   latencies_us.push_back(
                                       std::chrono::duration_cast<std::chrono::microseconds>(done - sent).count());
                               }
                               more = done < stop;
                               if (!more) --in_flight;
                           }
                           if (more) {
                               submit();
                           } else {
                               idle.notify_all();
                           }
                       });
    };
    {
        std::lock_guard lock(mu);
        in_flight = concurrency;
    }
    for (int i = 0; i < concurrency; ++i) submit();
    {
        std::unique_lock lock(mu);
        idle.wait(lock, [&] { return in_flight == 0; });
    }
    const auto elapsed_us = std::chrono::duration_cast<std::chrono::microseconds>(Steady::now() - start).count();
    commits.Stop();

    int64_t spent = 0;
    for (const auto& c : ids) {
        auto balance = credits.Balance(c);
        if (!balance.ok()) return Fail(balance.error().message);
        spent += 1'000'000'000'000 - balance->total();
    }
    std::sort(latencies_us.begin(), latencies_us.end());
    const auto pct = [&](size_t percent) {
        if (latencies_us.empty()) return int64_t{0};
        return latencies_us[std::min(latencies_us.size() - 1, latencies_us.size() * percent / 100)];
    };
    std::cout << "RESULT counted=" << counted.load() << " elapsed_us=" << elapsed_us << " p50_us=" << pct(50)
              << " p99_us=" << pct(99) << " refused=" << refused.load() << " spent=" << spent << std::endl;
    return refused.load() == 0 ? 0 : 1;
}
