// Usage limits on both stores (issue 12): the check and the increment as one step under 200 concurrent callers (on
// PostgreSQL spread over three nodes, each with its own connection pool), the 80% warning announced exactly once
// however many calls cross it, gauges against counters and their periods, soft limits, and bad input recording
// nothing.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <atomic>
#include <thread>

#include "adapters/config/catalog_json.hpp"
#include "adapters/http/json_views.hpp"
#include "adapters/openssl_secret_hasher.hpp"
#include "app/member_service.hpp"
#include "app/billing_service.hpp"
#include "app/event_outbox.hpp"
#include "app/usage_service.hpp"
#include "app/write_group.hpp"
#include "test_store.hpp"
#include "test_support.hpp"

namespace tally {
namespace {

using testing::ManualClock;
using testing::StoreKind;

constexpr int64_t kT0 = 1'767'225'600;  // 2026-01-01T00:00:00Z

constexpr const char* kCatalog = R"({"roles":["member","professional"],"default_plan":"free",
  "meters":{"seats":{"kind":"gauge","mode":"hard","unit":"seats"},
            "builds":{"kind":"counter","mode":"hard","unit":"builds"},
            "storage":{"kind":"gauge","mode":"soft","unit":"GB"}},
  "plans":[{"id":"free","name":"Free","role":"member","features":{"sso":false},
            "limits":{"seats":100,"builds":10,"storage":5}}]})";

/// One Tally node over its own store (PostgreSQL: its own pool) or the shared one (SQLite: one process).
struct Node {
    Node(Store& store, const Catalog& catalog, const Clock& clock, EventOutbox& outbox)
        : billing(store, catalog, clock, BillingConfig{}, &outbox), usage(store, billing, clock, &outbox) {}
    BillingService billing;
    UsageService usage;
};

struct Harness {
    explicit Harness(StoreKind kind, const char* catalog_json = kCatalog)
        : kind(kind), db(kind), catalog(ParseCatalogJson(catalog_json).value()) {
        stores.push_back(db.Open());
        for (int i = 1; i < 3; ++i) {
            if (kind == StoreKind::kPostgres) stores.push_back(db.Open());
        }
        for (size_t i = 0; i < 3; ++i) {
            nodes.push_back(std::make_unique<Node>(*stores[std::min(i, stores.size() - 1)], catalog, clock, outbox));
        }
        Status s = stores[0]->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(auto created, nodes[0]->billing.CreateCustomer(tx, "acme", CustomerInput{}));
            customer = created.first.customer.id;
            return {};
        });
        EXPECT_TRUE(s.ok()) << s.error().message;
    }
    StoreKind kind;
    testing::TestStore db;
    ManualClock clock{kT0 + 86400};
    Catalog catalog;
    http::JsonObjectRenderer renderer;
    EventOutbox outbox{renderer, clock};
    std::vector<std::unique_ptr<Store>> stores;
    std::vector<std::unique_ptr<Node>> nodes;
    CustomerId customer;

    Store& StoreOf(size_t node) { return *stores[std::min(node, stores.size() - 1)]; }
    Result<UsageOutcome> Check(size_t node, const std::string& meter, int64_t amount) {
        std::optional<UsageOutcome> out;
        // As the API runs it: callers of one meter queue on the store's per-key lock.
        TALLY_TRY(StoreOf(node).WriteSerialized("usage:" + customer.str() + ":" + meter, [&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, nodes[node]->usage.Check(tx, customer, meter, amount, true));
            return {};
        }));
        return *out;
    }
    Result<UsageOutcome> Record(const UsageInput& in) {
        std::optional<UsageOutcome> out;
        TALLY_TRY(StoreOf(0).Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, nodes[0]->usage.Record(tx, in));
            return {};
        }));
        return *out;
    }
    int64_t Current(const std::string& meter) {
        auto summary = nodes[0]->usage.Summary(customer);
        EXPECT_TRUE(summary.ok());
        for (const auto& m : summary->meters) {
            if (m.meter.name == meter) return m.current;
        }
        return -1;
    }
    std::vector<AppEventRecord> Thresholds() {
        std::vector<AppEventRecord> events;
        EXPECT_TRUE(stores[0]->Read([&](StoreTx& tx) -> Status {
            AppEventFilter filter;
            filter.limit = 1000;
            filter.type = "usage.threshold_reached";
            TALLY_ASSIGN_OR_RETURN(events, tx.events().ListEvents(filter));
            return {};
        }).ok());
        return events;
    }
};

class UsageTest : public ::testing::TestWithParam<StoreKind> {};
INSTANTIATE_TEST_SUITE_P(Stores, UsageTest, testing::kBothStores, testing::StoreKindName);

TEST_P(UsageTest, TwoHundredConcurrentChecksTakeExactlyTheLastFiftyUnits) {
    for (int run = 0; run < 2; ++run) {
        Harness h(GetParam());
        ASSERT_TRUE(h.Record(UsageInput{h.customer, "seats", 50, true, std::nullopt}).ok());
        std::atomic<int> allowed{0}, refused{0}, failed{0};
        std::vector<std::thread> threads;
        for (int i = 0; i < 200; ++i) {
            threads.emplace_back([&, i] {
                auto r = h.Check(static_cast<size_t>(i % 3), "seats", 1);
                if (!r.ok()) {
                    ++failed;
                    ADD_FAILURE() << r.error().message;
                } else if (r->allowed) {
                    ++allowed;
                } else {
                    ++refused;
                }
            });
        }
        for (auto& t : threads) t.join();
        EXPECT_EQ(failed.load(), 0);
        EXPECT_EQ(allowed.load(), 50) << "run " << run;
        EXPECT_EQ(refused.load(), 150);
        EXPECT_EQ(h.Current("seats"), 100);  // the limit, never past it
        // 80%, 95% and 100% were each crossed by one of the concurrent calls, and announced once.
        std::map<int64_t, int> by_threshold;
        for (const auto& e : h.Thresholds()) {
            auto threshold = boost::json::parse(e.payload).at("data").at("object").at("threshold").as_int64();
            ++by_threshold[threshold];
        }
        EXPECT_EQ(by_threshold, (std::map<int64_t, int>{{80, 1}, {95, 1}, {100, 1}}));
    }
}

TEST_P(UsageTest, CountersStartAgainEachPeriodAndGaugesDoNot) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Check(0, "builds", 6).value().allowed);
    ASSERT_TRUE(h.Record(UsageInput{h.customer, "seats", 7, false, std::nullopt}).ok());
    auto refused = h.Check(1, "builds", 5);
    ASSERT_TRUE(refused.ok());
    EXPECT_FALSE(refused->allowed);
    EXPECT_EQ(refused->reason, "limit_exceeded");
    EXPECT_EQ(refused->state.current, 6);  // a refused check records nothing
    EXPECT_EQ(refused->state.remaining, 4);
    ASSERT_TRUE(refused->state.period.has_value());  // no subscription: the calendar month
    EXPECT_EQ(refused->state.period->start.unix_seconds(), kT0);
    EXPECT_EQ(refused->state.period->end.unix_seconds(), kT0 + 31 * 86400);
    h.clock.Set(kT0 + 31 * 86400 + 10);  // February
    EXPECT_EQ(h.Current("builds"), 0);
    EXPECT_EQ(h.Current("seats"), 7);
    EXPECT_TRUE(h.Check(2, "builds", 10).value().allowed);
    // A late event of this period counts here.
    EXPECT_TRUE(h.Record(UsageInput{h.customer, "seats", -2, false, Timestamp(kT0 + 31 * 86400 + 5)}).ok());
    EXPECT_EQ(h.Current("seats"), 5);
    // A counter's usage that happened in January, arriving within the grace window, counts in January, not now.
    auto late = h.Record(UsageInput{h.customer, "builds", 1, false, Timestamp(kT0 + 5)});
    ASSERT_TRUE(late.ok()) << late.error().message;
    ASSERT_TRUE(late->state.period.has_value());
    EXPECT_EQ(late->state.period->start.unix_seconds(), kT0);
    EXPECT_EQ(late->state.current, 7);  // January's 6 and this one
    EXPECT_EQ(h.Current("builds"), 10);
    // December is closed, and so is January once the window has passed.
    auto december = h.Record(UsageInput{h.customer, "builds", 1, false, Timestamp(kT0 - 5)});
    EXPECT_EQ(december.error().param, "timestamp");
    h.clock.Set(kT0 + 31 * 86400 + kUsageLateGraceSeconds);
    auto closed = h.Record(UsageInput{h.customer, "builds", 1, false, Timestamp(kT0 + 5)});
    EXPECT_EQ(closed.error().param, "timestamp");
    EXPECT_EQ(h.Current("builds"), 10);
}

TEST_P(UsageTest, ANullLimitIsUnlimited) {
    Harness h(GetParam(), R"({"roles":["member"],"default_plan":"free",
      "meters":{"builds":{"kind":"counter","mode":"hard","unit":"builds"}},
      "plans":[{"id":"free","name":"Free","role":"member","limits":{"builds":null}}]})");
    auto big = h.Check(0, "builds", kUsageAmountMax / 2);
    ASSERT_TRUE(big.ok()) << big.error().message;
    EXPECT_TRUE(big->allowed);
    EXPECT_FALSE(big->state.limit.has_value());
    EXPECT_EQ(big->state.remaining, 0);
    EXPECT_TRUE(h.Check(1, "builds", kUsageAmountMax / 2).value().allowed);
    EXPECT_TRUE(h.Thresholds().empty());  // no limit, no warnings
    // An override can still cap it.
    ASSERT_TRUE(h.StoreOf(0).Write([&](StoreTx& tx) -> Status {
        TALLY_TRY(h.nodes[0]->usage.SetOverride(tx, {h.customer, "builds", kUsageAmountMax, 0, std::nullopt, "cap", {}, "a"}));
        return {};
    }).ok());
    EXPECT_FALSE(h.Check(0, "builds", 1).value().allowed);
}

TEST_P(UsageTest, AGaugeThatFallsBackUnderAThresholdWarnsAgainWhenItNextCrossesIt) {
    Harness h(GetParam());
    auto set = [&](int64_t v) { ASSERT_TRUE(h.Record(UsageInput{h.customer, "seats", v, true, std::nullopt}).ok()); };
    set(85);  // 80%
    EXPECT_EQ(h.Thresholds().size(), 1u);
    set(90);  // still past 80%, not yet 95%: nothing new
    EXPECT_EQ(h.Thresholds().size(), 1u);
    set(40);  // projects deleted: under 80% again
    EXPECT_EQ(h.Thresholds().size(), 1u);
    set(96);  // 80% and 95% again
    EXPECT_EQ(h.Thresholds().size(), 3u);
    // A counter never falls, so within a period each threshold is announced once (the race test above).
}

// Seed 002: an organization's seats are its members; adding one past the plan's seats is refused.
TEST_P(UsageTest, SeatsAreAnOrganizationsMembersAndBlockTheOnePastTheLimit) {
    Harness h(GetParam(), R"({"roles":["member"],"default_plan":"free",
      "meters":{"users":{"kind":"gauge","mode":"hard","unit":"seats","source":"members"}},
      "plans":[{"id":"free","name":"Free","role":"member","limits":{"users":2}}]})");
    EXPECT_TRUE(h.catalog.FindMeter("users")->counts_members);
    OpenSslSecretHasher hasher;
    MemberService members(h.StoreOf(0), h.nodes[0]->billing, h.clock, hasher);
    members.SetSeatCheck([&](StoreTx& tx, const CustomerId& c) { return h.nodes[0]->usage.CheckSeat(tx, c); });
    CustomerId org;
    ASSERT_TRUE(h.StoreOf(0).Write([&](StoreTx& tx) -> Status {
        CustomerInput in;
        in.type = CustomerType::kOrganization;
        TALLY_ASSIGN_OR_RETURN(auto created, h.nodes[0]->billing.CreateCustomer(tx, "org_seats", in));
        org = created.first.customer.id;
        return {};
    }).ok());
    auto add = [&](const std::string& user) -> Status {
        return h.StoreOf(0).Write([&](StoreTx& tx) -> Status {
            TALLY_TRY(members.Add(tx, org, user, "", MemberRole::kMember, std::nullopt, "admin:key_1"));
            return {};
        });
    };
    auto seats = [&] {
        std::optional<UsageOutcome> out;
        EXPECT_TRUE(h.StoreOf(0).Read([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, h.nodes[0]->usage.Check(tx, org, "users", 1, false));
            return {};
        }).ok());
        return *out;
    };
    EXPECT_EQ(seats().state.current, 0);
    ASSERT_TRUE(add("u1").ok());
    ASSERT_TRUE(add("u2").ok());
    EXPECT_EQ(seats().state.current, 2);
    EXPECT_FALSE(seats().allowed);
    Status third = add("u3");
    ASSERT_FALSE(third.ok());
    EXPECT_EQ(third.error().reason, ErrorReason::kUsageLimitExceeded);
    EXPECT_EQ(third.error().param, "user");
    EXPECT_EQ(members.List(org)->size(), 2u);
    // Recording seats of an organization is refused: its members are the count.
    EXPECT_EQ(h.Record(UsageInput{org, "users", 5, true, std::nullopt}).error().param, "meter");
    EXPECT_TRUE(h.Check(0, "users", 1).ok());  // the harness's individual customer: a plain gauge
    // An extra seat from an admin lets the third in.
    ASSERT_TRUE(h.StoreOf(0).Write([&](StoreTx& tx) -> Status {
        TALLY_TRY(h.nodes[0]->usage.SetOverride(tx, {org, "users", std::nullopt, 1, std::nullopt, "pilot", {}, "a"}));
        return {};
    }).ok());
    EXPECT_TRUE(add("u3").ok());
    EXPECT_EQ(seats().state.current, 3);
}

TEST_P(UsageTest, HistoryListsEveryDayAndMonthWithAGaugesValueCarriedOver) {
    Harness h(GetParam());
    // Jan 2: 3 seats and 4 builds; Jan 4: one seat fewer; Feb 2: 2 more builds.
    ASSERT_TRUE(h.Record(UsageInput{h.customer, "seats", 3, false, std::nullopt}).ok());
    ASSERT_TRUE(h.Check(0, "builds", 4).value().allowed);
    h.clock.Set(kT0 + 3 * 86400 + 100);
    ASSERT_TRUE(h.Record(UsageInput{h.customer, "seats", -1, false, std::nullopt}).ok());
    h.clock.Set(kT0 + 32 * 86400 + 100);
    ASSERT_TRUE(h.Check(0, "builds", 2).value().allowed);
    auto& usage = h.nodes[0]->usage;
    auto days = usage.History(h.customer, "seats", UsageGranularity::kDay, Timestamp(kT0), Timestamp(kT0 + 5 * 86400));
    ASSERT_TRUE(days.ok()) << days.error().message;
    ASSERT_EQ(days->buckets.size(), 5u);
    const int64_t usage_by_day[] = {0, 3, 0, -1, 0};
    const int64_t value_by_day[] = {0, 3, 3, 2, 2};
    for (size_t i = 0; i < 5; ++i) {
        EXPECT_EQ(days->buckets[i].period.start.unix_seconds(), kT0 + static_cast<int64_t>(i) * 86400);
        EXPECT_EQ(days->buckets[i].usage, usage_by_day[i]) << i;
        EXPECT_EQ(days->buckets[i].value, value_by_day[i]) << i;
    }
    // A window starting after the first seats still knows the gauge's value.
    auto later = usage.History(h.customer, "seats", UsageGranularity::kDay, Timestamp(kT0 + 3 * 86400),
                               Timestamp(kT0 + 4 * 86400));
    ASSERT_EQ(later->buckets.size(), 1u);
    EXPECT_EQ(later->buckets[0].value, 2);
    auto months = usage.History(h.customer, "builds", UsageGranularity::kMonth, Timestamp(kT0),
                                Timestamp(kT0 + 59 * 86400));
    ASSERT_TRUE(months.ok());
    ASSERT_EQ(months->buckets.size(), 2u);
    EXPECT_EQ(months->buckets[0].usage, 4);
    EXPECT_EQ(months->buckets[0].events, 1);
    EXPECT_EQ(months->buckets[1].period.start.unix_seconds(), kT0 + 31 * 86400);
    EXPECT_EQ(months->buckets[1].usage, 2);
    // The default window: the last 12 months through now.
    auto defaults = usage.History(h.customer, "builds", UsageGranularity::kMonth, std::nullopt, std::nullopt);
    ASSERT_TRUE(defaults.ok());
    EXPECT_EQ(defaults->buckets.size(), 12u);
    EXPECT_EQ(defaults->buckets.back().usage, 2);
    // Bad input.
    EXPECT_EQ(usage.History(h.customer, "widgets", UsageGranularity::kDay, std::nullopt, std::nullopt).error().param,
              "meter");
    EXPECT_EQ(usage.History(CustomerId("cust_nope"), "seats", UsageGranularity::kDay, std::nullopt, std::nullopt)
                  .error()
                  .param,
              "id");
    EXPECT_EQ(usage.History(h.customer, "seats", UsageGranularity::kDay, Timestamp(kT0 + 10), Timestamp(kT0))
                  .error()
                  .param,
              "from");
    EXPECT_EQ(usage.History(h.customer, "seats", UsageGranularity::kDay, Timestamp(kT0), Timestamp(kT0 + 400 * 86400))
                  .error()
                  .param,
              "to");
}

TEST_P(UsageTest, ASoftLimitAllowsAndReportsOverageAndUsageIsAFact) {
    Harness h(GetParam());
    auto over = h.Check(0, "storage", 7);
    ASSERT_TRUE(over.ok());
    EXPECT_TRUE(over->allowed);
    EXPECT_EQ(over->reason, "overage");
    EXPECT_EQ(over->state.overage, 2);
    // Recorded usage counts past a hard limit too (it happened), reported as overage.
    auto recorded = h.Record(UsageInput{h.customer, "builds", 12, false, std::nullopt});
    ASSERT_TRUE(recorded.ok());
    EXPECT_EQ(recorded->state.current, 12);
    EXPECT_EQ(recorded->state.overage, 2);
    EXPECT_FALSE(h.Check(0, "builds", 1).value().allowed);
}

TEST_P(UsageTest, BadInputNamesItsParameterAndRecordsNothing) {
    Harness h(GetParam());
    struct Case {
        const char* name;
        UsageInput in;
        std::string param;
    };
    const int64_t now = h.clock.Now().unix_seconds();
    const std::vector<Case> cases = {
        {"unknown customer", {CustomerId("cust_nope"), "seats", 1, false, std::nullopt}, "customer"},
        {"unknown meter", {h.customer, "widgets", 1, false, std::nullopt}, "meter"},
        {"negative counter", {h.customer, "builds", -1, false, std::nullopt}, "value"},
        {"negative set", {h.customer, "seats", -1, true, std::nullopt}, "value"},
        {"gauge below 0", {h.customer, "seats", -1, false, std::nullopt}, "value"},
        {"past 2^53", {h.customer, "seats", kUsageAmountMax + 1, false, std::nullopt}, "value"},
        {"future", {h.customer, "seats", 1, false, Timestamp(now + kUsageClockSkewSecondsMax + 1)}, "timestamp"},
    };
    for (const auto& c : cases) {
        auto r = h.Record(c.in);
        ASSERT_FALSE(r.ok()) << c.name;
        EXPECT_EQ(r.error().param, c.param) << c.name << ": " << r.error().message;
    }
    for (int64_t amount : {int64_t{0}, int64_t{-3}, kUsageAmountMax + 1}) {
        EXPECT_EQ(h.Check(0, "seats", amount).error().param, "amount");
    }
    EXPECT_EQ(h.Check(0, "widgets", 1).error().param, "meter");
    EXPECT_EQ(h.nodes[0]->usage.CheckFeature(h.customer, "teleport").error().param, "feature");
    EXPECT_FALSE(h.nodes[0]->usage.CheckFeature(h.customer, "sso").value());
    EXPECT_EQ(h.Current("seats"), 0);
    EXPECT_EQ(h.Current("builds"), 0);
    EXPECT_TRUE(h.Thresholds().empty());
}

TEST_P(UsageTest, AnOverrideChangesTheLimitUntilItExpiresAndIsAudited) {
    Harness h(GetParam());
    ASSERT_TRUE(h.Check(0, "builds", 10).value().allowed);
    EXPECT_FALSE(h.Check(0, "builds", 1).value().allowed);
    auto set = [&](LimitOverrideRecord o) -> Result<LimitOverrideRecord> {
        std::optional<LimitOverrideRecord> out;
        TALLY_TRY(h.StoreOf(0).Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, h.nodes[0]->usage.SetOverride(tx, o));
            return {};
        }));
        return *out;
    };
    const int64_t now = h.clock.Now().unix_seconds();
    auto extra = set({h.customer, "builds", std::nullopt, 5, Timestamp(now + 3600), "launch week", {}, "admin:key_1"});
    ASSERT_TRUE(extra.ok()) << extra.error().message;
    auto allowed = h.Check(1, "builds", 5);  // another node sees it at once
    ASSERT_TRUE(allowed.ok());
    EXPECT_TRUE(allowed->allowed);
    EXPECT_EQ(allowed->state.limit, 15);
    ASSERT_TRUE(allowed->state.override_record.has_value());
    EXPECT_FALSE(h.Check(0, "builds", 1).value().allowed);
    // Expired: the plan's limit again (and the usage already recorded stays).
    h.clock.Advance(3601);
    auto after = h.Check(0, "builds", 1);
    EXPECT_FALSE(after->allowed);
    EXPECT_EQ(after->state.limit, 10);
    EXPECT_FALSE(after->state.override_record.has_value());
    EXPECT_EQ(after->state.current, 15);
    EXPECT_TRUE(h.nodes[0]->usage.ListOverrides(h.customer)->empty());
    // A replaced limit, then removed.
    ASSERT_TRUE(set({h.customer, "seats", 2, 0, std::nullopt, "pilot", {}, "admin:key_1"}).ok());
    EXPECT_TRUE(h.Check(0, "seats", 2).value().allowed);
    EXPECT_FALSE(h.Check(0, "seats", 1).value().allowed);
    ASSERT_TRUE(h.StoreOf(0).Write([&](StoreTx& tx) -> Status {
        TALLY_TRY(h.nodes[0]->usage.ClearOverride(tx, h.customer, "seats", "admin:key_1"));
        return {};
    }).ok());
    EXPECT_TRUE(h.Check(0, "seats", 1).value().allowed);  // the plan's 100
    // Refusals name their field; each change is audited.
    EXPECT_EQ(set({h.customer, "widgets", 1, 0, std::nullopt, "x", {}, "a"}).error().param, "meter");
    EXPECT_EQ(set({h.customer, "seats", -1, 0, std::nullopt, "x", {}, "a"}).error().param, "limit");
    EXPECT_EQ(set({h.customer, "seats", std::nullopt, 0, std::nullopt, "x", {}, "a"}).error().param, "limit");
    EXPECT_EQ(set({h.customer, "seats", 1, 0, std::nullopt, " ", {}, "a"}).error().param, "reason");
    EXPECT_EQ(set({h.customer, "seats", 1, 0, Timestamp(now - 1), "x", {}, "a"}).error().param, "expires_at");
    EXPECT_EQ(set({CustomerId("cust_nope"), "seats", 1, 0, std::nullopt, "x", {}, "a"}).error().param, "id");
    std::vector<AuditEntry> audit;
    ASSERT_TRUE(h.stores[0]->Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(audit, tx.audit().List(h.customer, 100));
        return {};
    }).ok());
    std::vector<std::string> kinds;
    for (const auto& e : audit) {
        if (e.kind.starts_with("limit_override")) kinds.push_back(e.kind);
    }
    EXPECT_EQ(kinds, (std::vector<std::string>{"limit_override_cleared", "limit_override_set", "limit_override_set"}));
}

/// Runs |sql| on the harness's database beside the store (the store's connections closed first).
void ExecRaw(const testing::TestStore& db, const std::string& sql) {
    if (db.kind() == StoreKind::kPostgres) {
        Status s = db.Connect()->Exec(sql);
        ASSERT_TRUE(s.ok()) << s.error().message;
        return;
    }
    sqlite3* raw = nullptr;
    ASSERT_EQ(sqlite3_open(db.url().c_str(), &raw), SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(raw, sql.c_str(), nullptr, nullptr, &err);
    EXPECT_EQ(rc, SQLITE_OK) << (err ? err : "");
    sqlite3_free(err);
    sqlite3_close(raw);
}

Result<std::vector<UsageEventResult>> RecordEvents(Store& store, UsageService& usage, const std::string& api_key,
                                                   const std::vector<UsageEventInput>& events,
                                                   const std::function<std::string(size_t)>& legacy_hash = nullptr) {
    std::optional<std::vector<UsageEventResult>> out;
    TALLY_TRY(store.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, usage.RecordEvents(tx, api_key, events, legacy_hash));
        return {};
    }));
    return std::move(*out);
}

UsageEventInput Event(const CustomerId& customer, const std::string& meter, int64_t value, std::string key,
                      bool set = false, std::optional<Timestamp> at = std::nullopt) {
    return UsageEventInput{UsageInput{customer, meter, value, set, at}, std::move(key)};
}

using St = UsageEventResult::Status;

TEST_P(UsageTest, EventsAreRecordedInOrderEachOnItsOwnAndAKeyReplaysItsFirstRecord) {
    Harness h(GetParam());
    const CustomerId c = h.customer;
    auto first = RecordEvents(h.StoreOf(0), h.nodes[0]->usage, "key_a",
                              {Event(c, "seats", 3, "a1"), Event(c, "seats", 2, "a2"), Event(c, "seats", 3, "a1"),
                               Event(c, "seats", 4, "a1"), Event(c, "widgets", 1, "w"), Event(c, "seats", -10, "neg"),
                               Event(c, "builds", 4, ""), Event(c, "seats", 7, "s", true), Event(c, "seats", 7, "s"),
                               Event(CustomerId("cust_nope"), "seats", 1, "n")});
    ASSERT_TRUE(first.ok()) << first.error().message;
    const std::vector<St> statuses = {St::kRecorded, St::kRecorded, St::kReplayed, St::kRejected, St::kRejected,
                                      St::kRejected, St::kRecorded, St::kRecorded, St::kRejected, St::kRejected};
    ASSERT_EQ(first->size(), statuses.size());
    for (size_t i = 0; i < statuses.size(); ++i) EXPECT_EQ((*first)[i].status, statuses[i]) << i;
    EXPECT_EQ((*first)[1].record.current, 5);
    EXPECT_EQ((*first)[2].record.current, 3);  // the replay answers what the first left
    EXPECT_EQ((*first)[3].error->reason, ErrorReason::kIdempotencyKeyReused);
    EXPECT_EQ((*first)[3].error->param, "idempotency_key");
    EXPECT_EQ((*first)[4].error->param, "meter");
    EXPECT_EQ((*first)[5].error->param, "value");
    EXPECT_EQ((*first)[8].error->reason, ErrorReason::kIdempotencyKeyReused);  // "s" was a set, not an increment
    EXPECT_EQ((*first)[9].error->param, "customer");
    const UsageEventRecord& builds = (*first)[6].record;
    EXPECT_EQ(builds.current, 4);
    EXPECT_EQ(builds.limit, 10);
    ASSERT_TRUE(builds.period_end.has_value());  // a counter's period
    EXPECT_GT(builds.period_end->unix_seconds(), builds.period_start.unix_seconds());
    EXPECT_FALSE((*first)[7].record.period_end.has_value());  // a gauge's: none
    EXPECT_EQ(h.Current("seats"), 7);
    EXPECT_EQ(h.Current("builds"), 4);

    // Later calls, on any node: a key replays what its event left then; given another way (a timestamp now given,
    // another customer) it is refused; keys belong to their API key; a refused event's key is not used up.
    const Timestamp now = h.clock.Now();
    auto later = RecordEvents(h.StoreOf(1), h.nodes[1]->usage, "key_a",
                              {Event(c, "seats", 2, "a2"), Event(c, "seats", 2, "a2", false, now),
                               Event(c, "seats", 1, "neg"), Event(c, "seats", 1, "neg")});
    ASSERT_TRUE(later.ok()) << later.error().message;
    EXPECT_EQ((*later)[0].status, St::kReplayed);
    EXPECT_EQ((*later)[0].record.current, 5);
    EXPECT_EQ((*later)[0].record.limit, 100);
    EXPECT_EQ((*later)[1].status, St::kRejected);
    EXPECT_EQ((*later)[2].status, St::kRecorded);
    EXPECT_EQ((*later)[2].record.current, 8);
    EXPECT_EQ((*later)[3].status, St::kReplayed);
    auto other_key = RecordEvents(h.StoreOf(0), h.nodes[0]->usage, "key_b", {Event(c, "seats", 3, "a1")});
    ASSERT_TRUE(other_key.ok());
    EXPECT_EQ((*other_key)[0].status, St::kRecorded);
    EXPECT_EQ(h.Current("seats"), 11);

    // Thresholds crossed inside one call are announced once each: 4 -> 8 (80%) -> 9 -> 10 (95%, 100%).
    auto crossing = RecordEvents(h.StoreOf(0), h.nodes[0]->usage, "key_a",
                                 {Event(c, "builds", 4, "b1"), Event(c, "builds", 1, "b2"), Event(c, "builds", 1, "b3"),
                                  Event(c, "builds", 1, "b4")});
    ASSERT_TRUE(crossing.ok());
    EXPECT_EQ((*crossing)[3].record.current, 11);
    EXPECT_EQ((*crossing)[3].record.limit, 10);  // usage is a fact: past a hard limit, as overage
    std::map<int64_t, int> by_threshold;
    for (const auto& e : h.Thresholds()) {
        ++by_threshold[boost::json::parse(e.payload).at("data").at("object").at("threshold").as_int64()];
    }
    EXPECT_EQ(by_threshold, (std::map<int64_t, int>{{80, 1}, {95, 1}, {100, 1}}));
}

// The same keyed events sent to three nodes at once (a client retrying through a load balancer): each recorded once,
// the others' answers replays, the meter counting each event once.
TEST_P(UsageTest, TheSameKeyedBatchOnThreeNodesAtOnceIsRecordedOnce) {
    Harness h(GetParam());
    std::vector<UsageEventInput> events;
    for (int i = 0; i < 50; ++i) events.push_back(Event(h.customer, "seats", 1, "k" + std::to_string(i)));
    std::atomic<int> recorded{0}, replayed{0}, failed{0};
    std::vector<std::thread> threads;
    for (size_t n = 0; n < 3; ++n) {
        threads.emplace_back([&, n] {
            auto r = RecordEvents(h.StoreOf(n), h.nodes[n]->usage, "key_a", events);
            if (!r.ok()) {
                ++failed;
                ADD_FAILURE() << r.error().message;
                return;
            }
            for (const auto& e : *r) ++(e.status == St::kRecorded ? recorded : replayed);
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(failed.load(), 0);
    EXPECT_EQ(recorded.load(), 50);
    EXPECT_EQ(replayed.load(), 100);
    EXPECT_EQ(h.Current("seats"), 50);
}

TEST_P(UsageTest, AGroupsRecordedChecksRunAsOneBatchDecidedInOrder) {
    Harness h(GetParam());
    struct In {
        std::string customer;
        std::string meter;
        int64_t amount;
    };
    const std::string acme = h.customer.str();
    const std::vector<In> inputs = {
        {acme, "builds", 6},      // 0: allowed, 6 of 10
        {acme, "builds", 5},      // 1: not allowed (11 > 10), nothing recorded
        {acme, "builds", 4},      // 2: allowed after 0: 10 of 10, crossing 80, 95 and 100%
        {acme, "seats", 3},       // 3: allowed, another meter
        {acme, "nope", 1},        // 4: no such meter
        {"cus_nope", "builds", 1},  // 5: no such customer
        {acme, "builds", 0},      // 6: bad amount
    };
    std::vector<std::shared_ptr<PendingCheck>> items;
    std::vector<GroupedWrite> group;
    for (const auto& in : inputs) {
        auto item = std::make_shared<PendingCheck>();
        item->customer = CustomerId(in.customer);
        item->meter = in.meter;
        item->amount = in.amount;
        items.push_back(item);
        GroupedWrite w{{"usage:" + in.customer + ":" + in.meter}, nullptr};
        w.batch = &h.nodes[0]->usage.checks();
        w.item = item;
        group.push_back(std::move(w));
    }
    auto outcomes = WriteGroupSink(h.StoreOf(0))(group);
    ASSERT_TRUE(outcomes.ok()) << outcomes.error().message;
    for (size_t i = 0; i < items.size(); ++i) EXPECT_EQ((*outcomes)[i].status.ok(), items[i]->out->ok()) << i;
    ASSERT_TRUE(items[0]->out->ok());
    EXPECT_TRUE((*items[0]->out)->recorded);
    EXPECT_EQ((*items[0]->out)->state.current, 6);
    ASSERT_TRUE(items[1]->out->ok());
    EXPECT_FALSE((*items[1]->out)->allowed);
    EXPECT_FALSE((*items[1]->out)->recorded);
    EXPECT_EQ((*items[1]->out)->state.current, 6);
    ASSERT_TRUE(items[2]->out->ok());
    EXPECT_TRUE((*items[2]->out)->recorded);
    EXPECT_EQ((*items[2]->out)->state.current, 10);
    EXPECT_EQ((*items[2]->out)->state.remaining, std::optional<int64_t>(0));
    ASSERT_TRUE(items[3]->out->ok());
    EXPECT_EQ((*items[3]->out)->state.current, 3);
    ASSERT_FALSE(items[4]->out->ok());
    EXPECT_EQ(items[4]->out->error().param, "meter");
    ASSERT_FALSE(items[5]->out->ok());
    EXPECT_EQ(items[5]->out->error().param, "customer");
    ASSERT_FALSE(items[6]->out->ok());
    EXPECT_EQ(items[6]->out->error().param, "amount");
    // Written once per meter, what the batch left; each threshold announced once.
    EXPECT_EQ(h.Current("builds"), 10);
    EXPECT_EQ(h.Current("seats"), 3);
    EXPECT_EQ(h.Thresholds().size(), 3u);
    auto history = h.nodes[0]->usage.History(h.customer, "builds", UsageGranularity::kDay, std::nullopt, std::nullopt);
    ASSERT_TRUE(history.ok()) << history.error().message;
    int64_t used = 0, events = 0;
    for (const auto& b : history->buckets) {
        used += b.usage;
        events += b.events;
    }
    EXPECT_EQ(used, 10);  // the two recorded events, 6 and 4
    EXPECT_EQ(events, 2);
    // A single check after the batch sees what it left.
    EXPECT_FALSE(h.Check(0, "builds", 1).value().allowed);
}

TEST_P(UsageTest, KeysRecordedBeforeEventsCarriedThemStillReplayUntilPruned) {
    Harness h(GetParam());
    const bool pg = GetParam() == StoreKind::kPostgres;
    const int64_t now = h.clock.Now().unix_seconds();
    h.nodes.clear();
    h.stores.clear();
    // The schema as it was before (SQLite 13, PostgreSQL 10), with a usage key and another request's key: the
    // migrations from there are undone (a later migration added must be undone here too).
    ExecRaw(h.db, std::string("DELETE FROM schema_migrations WHERE version >= ") + (pg ? "11" : "14") +
                      "; CREATE INDEX credit_entries_grant ON credit_entries(grant_id);"
                      " DROP INDEX credit_reservations_lapsing; DROP INDEX credit_grants_lapsing;"
                      " DROP TABLE usage_legacy_keys; DROP INDEX usage_events_idempotency;"
                      " ALTER TABLE usage_events DROP COLUMN api_key_id; ALTER TABLE usage_events DROP COLUMN "
                      "idempotency_key; ALTER TABLE usage_events DROP COLUMN timestamp_given; ALTER TABLE usage_events "
                      "DROP COLUMN current; ALTER TABLE usage_events DROP COLUMN limit_value; ALTER TABLE usage_events "
                      "DROP COLUMN period_end;"
                      " INSERT INTO idempotency_keys(api_key_id, key, request_hash, state, status, response_body, "
                      "created_at) VALUES ('key_a', 'usage:old', 'H', 'done', 200, '{\"object\":\"usage_record\"}', " +
                      std::to_string(now) + "), ('key_a', 'other', 'H2', 'done', 200, '{}', " + std::to_string(now) +
                      ")");
    auto store = h.db.Open();  // migrates
    ASSERT_TRUE(store);
    Node node(*store, h.catalog, h.clock, h.outbox);
    const auto hash = [](const std::string& digest) { return [digest](size_t) { return digest; }; };
    auto replay = RecordEvents(*store, node.usage, "key_a", {Event(h.customer, "seats", 1, "old")}, hash("H"));
    ASSERT_TRUE(replay.ok()) << replay.error().message;
    EXPECT_EQ((*replay)[0].status, St::kReplayed);
    EXPECT_EQ((*replay)[0].legacy_response, std::optional<std::string>("{\"object\":\"usage_record\"}"));
    auto other = RecordEvents(*store, node.usage, "key_a", {Event(h.customer, "seats", 2, "old")}, hash("X"));
    EXPECT_EQ((*other)[0].status, St::kRejected);
    // "other" was not a usage key: it stays where it was, and names no usage event.
    std::optional<IdempotencyRecord> kept, moved;
    ASSERT_TRUE(store->Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(kept, tx.keys().GetIdempotency("key_a", "other"));
        TALLY_ASSIGN_OR_RETURN(moved, tx.keys().GetIdempotency("key_a", "usage:old"));
        return {};
    }).ok());
    EXPECT_TRUE(kept.has_value());
    EXPECT_FALSE(moved.has_value());
    auto fresh = RecordEvents(*store, node.usage, "key_a", {Event(h.customer, "seats", 1, "other")}, hash("H2"));
    EXPECT_EQ((*fresh)[0].status, St::kRecorded);
    // Past the retention the legacy key is pruned with the others, and the key records anew.
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto n, tx.keys().PruneIdempotency(Timestamp(now + 1)));
        EXPECT_EQ(n, 2);
        return {};
    }).ok());
    auto after = RecordEvents(*store, node.usage, "key_a", {Event(h.customer, "seats", 1, "old")}, hash("H"));
    EXPECT_EQ((*after)[0].status, St::kRecorded);
}

}  // namespace
}  // namespace tally
