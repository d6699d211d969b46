// `tally simulate`: a reproducible customer population driven through the Stripe sandbox's clock into a Tally
// database, through the same webhook processing `serve` runs. The data generator for analytics work.
#include "cli/simulate.hpp"

#include <boost/json.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include "adapters/config/catalog_json.hpp"
#include "sandbox/sandbox.hpp"
#include "adapters/sqlite/sqlite_store.hpp"
#include "adapters/stripe/event_decoder.hpp"
#include "adapters/stripe/form_encoding.hpp"
#include "app/billing_service.hpp"
#include "app/webhook_processor.hpp"
#include "cli/runtime.hpp"

namespace tally::cli {
namespace {

namespace bj = boost::json;

constexpr int64_t kSecondsPerDay = 86400;
constexpr int kDaysPerMonth = 30;            // the simulation's month: signups and hazards are per day
constexpr size_t kProcessChunkEvents = 500;  // events applied per processing transaction
constexpr size_t kPipelineDaysMax = 8;       // simulated days the sandbox may run ahead of Tally

// The population model. Probabilities are per customer and per simulated day unless stated.
constexpr int kTrialPercent = 30;        // of signups start with a trial
constexpr int64_t kTrialDays = 14;
constexpr int kYearlyPercent = 15;       // of signups pay yearly
constexpr int kBadCardPercent = 5;       // of signups give a card whose charges fail
constexpr uint64_t kUpgradePpmPerDay = 4000;     // parts per million: ~11% a month move up a plan
constexpr uint64_t kDowngradePpmPerDay = 2000;   // ~6% a month move down
constexpr uint64_t kCancelPpmPerDay = 3000;      // ~9% a month cancel at period end
constexpr uint64_t kCardBreaksPpmPerDay = 1500;  // ~4% a month: the card starts failing
constexpr uint64_t kCardFixedPpmPerDay = 150000; // a past_due customer replaces the card (15% a day)
constexpr uint64_t kPpm = 1000000;
constexpr std::array<int, 3> kPlanWeights = {50, 35, 15};  // paid plans, lowest first

/// The simulation's clock, shared by the sandbox and Tally, so grace periods run in simulated time.
class SimClock final : public Clock {
public:
    explicit SimClock(int64_t start) : now_(start) {}
    Timestamp Now() const override { return Timestamp(now_.load()); }
    void Set(int64_t t) { now_.store(t); }

private:
    std::atomic<int64_t> now_;
};

/// A paid catalog price the simulation can subscribe to.
struct SimPrice {
    std::string plan;
    std::string interval;
    std::string price_id;
};

struct SimCustomer {
    int signup_day = 0;
    std::string stripe_customer;
    std::string subscription;
    int plan_index = 0;  // into the paid plans, lowest first
    bool yearly = false;
    bool card_failing = false;  // the default card's charges fail until the customer replaces it
};

class Simulation {
public:
    Simulation(const SimulateOptions& o, int64_t start, Store& store, BillingService& billing, WebhookProcessor& processor,
               SimClock& clock)
        : o_(o), start_(start), store_(store), billing_(billing), processor_(processor), clock_(clock),
          sandbox_clock_(start), rng_(o.seed), sandbox_(SandboxConfigFor(o, sandbox_clock_)) {}

    /// Runs the population day by day. Two threads share the work: this one drives the sandbox (decisions,
    /// API calls, the clock) while a second applies each finished day's events to Tally, at most
    /// kPipelineDaysMax days behind; Tally's clock follows the day it is applying.
    Status Run() {
        TALLY_TRY(SetUpCatalog());
        auto clock = Call("POST", "/v1/test_helpers/test_clocks", {{"frozen_time", std::to_string(start_)}, {"name", "sim"}});
        if (!clock.ok()) return clock.error();
        clock_id_ = std::string(clock->at("id").as_string());
        const int days = o_.months * kDaysPerMonth;
        customers_.resize(static_cast<size_t>(o_.customers));
        for (auto& c : customers_) c.signup_day = static_cast<int>(Below(static_cast<uint64_t>(days)));
        Status applied;
        std::thread consumer([this, &applied] { applied = ApplyDays(); });
        Status produced = ProduceDays(days);
        {
            std::lock_guard lock(mu_);
            producer_done_ = true;
            cv_.notify_all();
        }
        consumer.join();
        if (!produced.ok()) return produced;
        return applied;
    }

    void PrintSummary(int64_t elapsed_ms) {
        std::map<std::string, int> statuses;
        std::map<std::string, int> roles;
        std::map<std::string, int> plans;
        std::map<std::string, int64_t> mrr;  // currency -> minor units per month
        int found = 0;
        for (size_t i = 0; i < customers_.size(); ++i) {
            auto views = billing_.FindByExternalId(ExternalId(i));
            if (!views.ok() || views->empty()) continue;
            ++found;
            const CustomerView& v = views->front();
            ++roles[v.customer.role];
            ++plans[v.customer.plan_id.empty() ? "none" : v.customer.plan_id];
            if (v.primary) {
                ++statuses[std::string(SubscriptionStatusName(v.primary->status))];
                if (v.primary->status == SubscriptionStatus::kActive || v.primary->status == SubscriptionStatus::kPastDue) {
                    const int64_t per_period = v.primary->unit_amount_minor * v.primary->quantity;
                    const int64_t months = v.primary->interval.unit == BillingInterval::Unit::kYear
                                               ? 12 * v.primary->interval.count
                                               : v.primary->interval.count;
                    mrr[v.primary->currency] += months > 0 ? per_period / months : 0;
                }
            }
        }
        auto line = [](const char* label, const std::map<std::string, int>& counts) {
            std::cout << label;
            for (const auto& [k, n] : counts) std::cout << " " << k << "=" << n;
            std::cout << "\n";
        };
        std::cout << "customers: " << found << " of " << customers_.size() << " (seed " << o_.seed << ", "
                  << o_.months << " months from " << FormatRfc3339(Timestamp(start_)) << ")\n";
        line("subscriptions:", statuses);
        line("roles:", roles);
        line("plans:", plans);
        line("events:", event_types_);
        std::cout << "events processed: " << processed_ << ", failed: " << failed_ << "\n";
        for (const auto& [currency, amount] : mrr) {
            auto cur = Currency::Parse(currency);
            std::cout << "mrr (active and past_due, yearly as 1/12): "
                      << (cur.ok() ? Money(amount, *cur).ToDecimalString() : std::to_string(amount)) << " " << currency
                      << "\n";
        }
        std::cout << "elapsed_ms: " << elapsed_ms << " (" << processed_ * 1000 / std::max<int64_t>(elapsed_ms, 1)
                  << " events/s; tally applying " << tally_busy_ms_ << " ms, sandbox waiting for it " << sandbox_wait_ms_
                  << " ms)\n";
    }

private:
    static sandbox::SandboxConfig SandboxConfigFor(const SimulateOptions& o, SimClock& clock) {
        sandbox::SandboxConfig config;
        config.now = [&clock] { return clock.Now().unix_seconds(); };
        config.public_url = "http://sandbox.invalid";  // no hosted pages in a simulation
        config.retain_events = false;                   // Drain takes them
        config.id_seed = o.seed;                        // the same seed gives the same ids, so the same run
        config.wall_clock_tick_ms = 0;                  // every customer is on the simulation's test clock
        return config;
    }

    static std::string ExternalId(size_t i) { return "sim_" + std::to_string(i); }

    uint64_t Below(uint64_t n) { return rng_() % n; }
    bool Chance(uint64_t ppm) { return rng_() % kPpm < ppm; }

    Result<bj::object> Call(const std::string& method, const std::string& path, const bj::object& params) {
        http::Request req;
        req.method = method;
        req.path = path;
        req.target = path;
        req.headers["authorization"] = "Bearer sk_test_simulation";
        if (method == "GET") {
            if (!params.empty()) req.target += "?" + stripe::EncodeForm(params);
        } else {
            req.body = stripe::EncodeForm(params);
        }
        http::Response r = sandbox_.Handle(req);
        auto parsed = bj::parse(r.body);
        if (r.status >= 400) {
            const auto& err = parsed.at("error").as_object();
            const auto* message = err.if_contains("message");
            return Error{r.status == 402 ? ErrorCode::kInvalidArgument : ErrorCode::kInternal,
                         method + " " + path + ": " +
                             (message && message->is_string() ? std::string(message->get_string()) : "error"),
                         ""};
        }
        return std::move(parsed.as_object());
    }

    Status SetUpCatalog() {
        for (const Plan& plan : billing_.catalog().plans()) {
            bool paid = false;
            for (const CatalogPrice& price : plan.prices) {
                if (price.lookup_key.empty() || price.unit_amount.amount_minor() == 0 || price.interval.count != 1) continue;
                if (!paid) {
                    TALLY_TRY(Call("POST", "/v1/products", {{"id", "tally_" + plan.id.str()}, {"name", plan.name}}));
                    paid = true;
                    plans_.push_back({});
                }
                const std::string interval = IntervalUnitName(price.interval.unit);
                TALLY_ASSIGN_OR_RETURN(
                    bj::object created,
                    Call("POST", "/v1/prices",
                         {{"product", "tally_" + plan.id.str()},
                          {"currency", price.unit_amount.currency().code()},
                          {"unit_amount", std::to_string(price.unit_amount.amount_minor())},
                          {"lookup_key", price.lookup_key},
                          {"recurring", bj::object{{"interval", interval}}}}));
                (interval == "year" ? plans_.back().yearly : plans_.back().monthly) =
                    SimPrice{plan.id.str(), interval, std::string(created.at("id").as_string())};
            }
        }
        if (plans_.size() < kPlanWeights.size()) {
            return InvalidArgument("the simulation needs at least " + std::to_string(kPlanWeights.size()) +
                                   " paid plans with monthly and yearly prices");
        }
        return {};
    }

    const SimPrice& PriceOf(const SimCustomer& c) const {
        const auto& p = plans_[static_cast<size_t>(c.plan_index)];
        return c.yearly && !p.yearly.price_id.empty() ? p.yearly : p.monthly;
    }

    Status SignUp(size_t i) {
        SimCustomer& c = customers_[i];
        const std::string external_id = ExternalId(i);
        // Like a team whose signup creates the Stripe customer first: Tally learns the customer from
        // customer.created and takes metadata.external_id as the app's id.
        const uint64_t pick = Below(100);
        const auto first = static_cast<uint64_t>(kPlanWeights[0]);
        const auto second = first + static_cast<uint64_t>(kPlanWeights[1]);
        c.plan_index = pick < first ? 0 : pick < second ? 1 : 2;
        c.yearly = Below(100) < kYearlyPercent;
        const bool trial = Below(100) < kTrialPercent;
        c.card_failing = Below(100) < kBadCardPercent;
        const char* card = c.card_failing ? "pm_card_chargeCustomerFail" : "pm_card_visa";
        TALLY_ASSIGN_OR_RETURN(
            bj::object customer,
            Call("POST", "/v1/customers",
                 {{"email", external_id + "@example.com"},
                  {"test_clock", clock_id_},
                  {"metadata", bj::object{{"external_id", external_id}}},
                  {"payment_method", card},
                  {"invoice_settings", bj::object{{"default_payment_method", card}}}}));
        c.stripe_customer = std::string(customer.at("id").as_string());
        bj::object params{{"customer", c.stripe_customer},
                          {"items", bj::array{bj::object{{"price", PriceOf(c).price_id}}}}};
        if (trial) params["trial_period_days"] = std::to_string(kTrialDays);
        TALLY_ASSIGN_OR_RETURN(bj::object sub, Call("POST", "/v1/subscriptions", params));
        c.subscription = std::string(sub.at("id").as_string());
        return {};
    }

    Status MaybeAct(size_t i) {
        SimCustomer& c = customers_[i];
        const bool up = Chance(kUpgradePpmPerDay);
        const bool down = !up && Chance(kDowngradePpmPerDay);
        const bool cancel = Chance(kCancelPpmPerDay);
        const bool breaks = !c.card_failing && Chance(kCardBreaksPpmPerDay);
        const bool fixes = c.card_failing && Chance(kCardFixedPpmPerDay);
        if (!up && !down && !cancel && !breaks && !fixes) return {};
        TALLY_ASSIGN_OR_RETURN(bj::object sub, Call("GET", "/v1/subscriptions/" + c.subscription, {}));
        const std::string status(sub.at("status").as_string());
        if (fixes && (status == "past_due" || status == "active" || status == "trialing")) {
            c.card_failing = false;
            TALLY_ASSIGN_OR_RETURN(bj::object pm, Call("POST", "/v1/payment_methods/pm_card_visa/attach",
                                                       {{"customer", c.stripe_customer}}));
            const std::string pm_id(pm.at("id").as_string());
            TALLY_TRY(Call("POST", "/v1/customers/" + c.stripe_customer,
                           {{"invoice_settings", bj::object{{"default_payment_method", pm_id}}}}));
            // Paying the newest open invoice ends the dunning run (older ones stay open, as in Stripe).
            const std::string latest(sub.at("latest_invoice").as_string());
            TALLY_ASSIGN_OR_RETURN(bj::object inv, Call("GET", "/v1/invoices/" + latest, {}));
            if (inv.at("status").as_string() == "open") TALLY_TRY(Call("POST", "/v1/invoices/" + latest + "/pay", {}));
            return {};
        }
        if (status != "active" && status != "trialing") return {};
        if (breaks) {
            c.card_failing = true;
            TALLY_ASSIGN_OR_RETURN(bj::object pm, Call("POST", "/v1/payment_methods/pm_card_chargeCustomerFail/attach",
                                                       {{"customer", c.stripe_customer}}));
            TALLY_TRY(Call("POST", "/v1/customers/" + c.stripe_customer,
                           {{"invoice_settings", bj::object{{"default_payment_method", pm.at("id")}}}}));
        }
        if (cancel && !sub.at("cancel_at_period_end").as_bool()) {
            TALLY_TRY(Call("POST", "/v1/subscriptions/" + c.subscription, {{"cancel_at_period_end", "true"}}));
            return {};
        }
        const int next_plan = c.plan_index + (up ? 1 : down ? -1 : 0);
        if ((up || down) && next_plan >= 0 && next_plan < static_cast<int>(plans_.size()) && next_plan != c.plan_index) {
            c.plan_index = next_plan;
            const std::string item(sub.at("items").at("data").as_array()[0].at("id").as_string());
            // Upgrades are charged at once, downgrades credited on the next invoice (a common SaaS policy).
            auto changed = Call("POST", "/v1/subscriptions/" + c.subscription,
                                {{"items", bj::array{bj::object{{"id", item}, {"price", PriceOf(c).price_id}}}},
                                 {"proration_behavior", up ? "always_invoice" : "create_prorations"}});
            if (!changed.ok() && changed.error().code != ErrorCode::kInvalidArgument) return changed.error();
        }
        return {};
    }

    static int64_t MsSince(std::chrono::steady_clock::time_point t) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t).count();
    }

    Status ProduceDays(int days) {
        for (int day = 0; day < days; ++day) {
            for (size_t i = 0; i < customers_.size(); ++i) {
                if (customers_[i].signup_day == day) {
                    TALLY_TRY(SignUp(i));
                } else if (customers_[i].signup_day < day && !customers_[i].subscription.empty()) {
                    TALLY_TRY(MaybeAct(i));
                }
            }
            const int64_t next = start_ + static_cast<int64_t>(day + 1) * kSecondsPerDay;
            auto advanced = Call("POST", "/v1/test_helpers/test_clocks/" + clock_id_ + "/advance",
                                 {{"frozen_time", std::to_string(next)}});
            if (!advanced.ok()) return advanced.error();
            sandbox_clock_.Set(next);
            const auto waited = std::chrono::steady_clock::now();
            std::unique_lock lock(mu_);
            cv_.wait(lock, [this] { return days_.size() < kPipelineDaysMax || consumer_failed_; });
            sandbox_wait_ms_ += MsSince(waited);
            if (consumer_failed_) return {};  // the consumer's error is reported
            days_.push_back(Day{next, sandbox_.TakeEvents()});
            cv_.notify_all();
        }
        return {};
    }

    Status ApplyDays() {
        for (;;) {
            Day day;
            {
                std::unique_lock lock(mu_);
                cv_.wait(lock, [this] { return !days_.empty() || producer_done_; });
                if (days_.empty()) return {};
                day = std::move(days_.front());
                days_.pop_front();
                cv_.notify_all();
            }
            clock_.Set(day.at);
            const auto began = std::chrono::steady_clock::now();
            Status s = Drain(std::move(day.events));
            tally_busy_ms_ += MsSince(began);
            if (!s.ok()) {
                std::lock_guard lock(mu_);
                consumer_failed_ = true;
                cv_.notify_all();
                return s;
            }
        }
    }

    /// Moves one day's events into Tally's inbox and applies them, as the webhook path would.
    Status Drain(std::vector<std::string> events) {
        StripeEventDecoder decoder;
        std::vector<InboxEvent> batch;
        const Timestamp now = clock_.Now();
        for (size_t i = 0; i < events.size(); ++i) {
            TALLY_ASSIGN_OR_RETURN(EventEnvelope envelope, decoder.DecodeEnvelope(events[i]));
            ++event_types_[envelope.type];
            InboxEvent e;
            e.id = envelope.id;
            e.type = envelope.type;
            e.created = envelope.created;
            e.payload = std::move(events[i]);
            e.received_at = now;
            batch.push_back(std::move(e));
            if (batch.size() == kProcessChunkEvents || i + 1 == events.size()) {
                // Recorded first, as the webhook endpoint does, then applied from the payloads in hand.
                TALLY_TRY(store_.AppendInbox(batch));
                TALLY_ASSIGN_OR_RETURN(auto results, processor_.ProcessRecorded(batch));
                for (const auto& r : results) (r.ok() ? processed_ : failed_)++;
                batch.clear();
            }
        }
        return {};
    }

    struct Day {
        int64_t at = 0;  // the end of the simulated day: Tally's clock while applying it
        std::vector<std::string> events;
    };

    struct PlanPrices {
        SimPrice monthly;
        SimPrice yearly;
    };

    const SimulateOptions& o_;
    int64_t start_;
    Store& store_;
    BillingService& billing_;
    WebhookProcessor& processor_;
    SimClock& clock_;          // Tally's
    SimClock sandbox_clock_;   // the sandbox's wall clock (customers live on the test clock)
    std::mt19937_64 rng_;
    sandbox::Sandbox sandbox_;
    std::string clock_id_;
    std::vector<PlanPrices> plans_;
    std::vector<SimCustomer> customers_;
    std::map<std::string, int> event_types_;
    int64_t processed_ = 0;
    int64_t failed_ = 0;
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<Day> days_;
    bool producer_done_ = false;
    int64_t tally_busy_ms_ = 0;    // applying events (the consumer thread)
    int64_t sandbox_wait_ms_ = 0;  // the sandbox thread waiting for Tally to catch up
    bool consumer_failed_ = false;
};

}  // namespace

int Simulate(const SimulateOptions& o) {
    if (o.customers < 1 || o.months < 1) {
        Log("error", "--customers and --months must be at least 1");
        return 2;
    }
    if (std::filesystem::exists(o.db)) {
        Log("error", "simulation database " + o.db + " exists; pass a new --db or remove it");
        return 2;
    }
    auto start = ParseRfc3339(o.start);
    if (!start.ok()) {
        Log("error", "--start: " + start.error().message);
        return 2;
    }
    auto catalog = LoadCatalog(o.catalog);
    if (!catalog.ok()) {
        Log("error", "invalid catalog: " + catalog.error().message);
        return 2;
    }
    // A generated database can be regenerated: commits skip fsync (the summary comes after a final checkpoint).
    auto store = sqlite::SqliteStore::Open(o.db, sqlite::StoreOptions{.durable = false});
    if (!store.ok()) {
        Log("error", store.error().message);
        return 1;
    }
    SimClock clock(start->unix_seconds());
    StripeEventDecoder decoder;
    BillingService billing(**store, *catalog, clock, BillingConfig{});
    WebhookProcessor processor(**store, decoder, billing, clock);
    const auto began = std::chrono::steady_clock::now();
    Simulation sim(o, start->unix_seconds(), **store, billing, processor, clock);
    if (Status s = sim.Run(); !s.ok()) {
        Log("error", "simulation failed: " + s.error().message);
        return 1;
    }
    if (auto swept = billing.SweepRoles(); !swept.ok()) {
        Log("error", swept.error().message);
        return 1;
    }
    sim.PrintSummary(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began).count());
    return 0;
}

}  // namespace tally::cli
