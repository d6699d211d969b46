#include "domain/credits.hpp"

#include <gtest/gtest.h>

namespace tally {
namespace {

CreditGrantState G(const char* id, GrantType type, int64_t remaining, std::optional<int64_t> expires, int64_t created,
                   std::optional<int> priority = std::nullopt) {
    return CreditGrantState{id, type, remaining, priority.value_or(DefaultGrantPriority(type)),
                            expires ? std::optional<Timestamp>(Timestamp(*expires)) : std::nullopt, Timestamp(created)};
}

// The README's and the spend order: priority (subscription first by default), soonest expiry,
// promotional before paid, oldest.
TEST(CreditsTest, SpendOrderTable) {
    struct Case {
        const char* name;
        CreditGrantState first, second;
    };
    const Case cases[] = {
        {"subscription before a bundle (default priority)", G("s", GrantType::kSubscription, 5, 2000, 10),
         G("b", GrantType::kBundle, 5, std::nullopt, 1)},
        {"an explicit priority wins over the default", G("p", GrantType::kPromotional, 5, std::nullopt, 10, -1),
         G("s", GrantType::kSubscription, 5, 1500, 1)},
        {"the soonest expiry first", G("b1", GrantType::kBundle, 5, 1500, 10), G("b2", GrantType::kBundle, 5, 2000, 1)},
        {"an expiry before none", G("b1", GrantType::kBundle, 5, 9000, 10), G("b2", GrantType::kBundle, 5, std::nullopt, 1)},
        {"promotional before paid at the same expiry", G("p", GrantType::kPromotional, 5, 2000, 10),
         G("b", GrantType::kBundle, 5, 2000, 1)},
        {"then the oldest", G("b1", GrantType::kBundle, 5, std::nullopt, 1), G("b2", GrantType::kBundle, 5, std::nullopt, 2)},
    };
    for (const auto& c : cases) {
        EXPECT_TRUE(SpendsBefore(c.first, c.second)) << c.name;
        EXPECT_FALSE(SpendsBefore(c.second, c.first)) << c.name;
    }
}

TEST(CreditsTest, ADeductionSpansGrantsInOrderOneDrawEach) {
    const std::vector<CreditGrantState> grants = {
        G("bundle", GrantType::kBundle, 100, std::nullopt, 1),
        G("sub", GrantType::kSubscription, 30, 5000, 2),
        G("promo", GrantType::kPromotional, 20, 4000, 3),
        G("expired", GrantType::kPromotional, 50, 999, 0),
        G("empty", GrantType::kSubscription, 0, 5000, 0),
    };
    auto draws = PlanDeduction(grants, 60, Timestamp(1000));
    ASSERT_TRUE(draws.ok());
    ASSERT_EQ(draws->size(), 3u);
    EXPECT_EQ((*draws)[0].grant, "sub");
    EXPECT_EQ((*draws)[0].amount, 30);
    EXPECT_EQ((*draws)[1].grant, "promo");
    EXPECT_EQ((*draws)[1].amount, 20);
    EXPECT_EQ((*draws)[2].grant, "bundle");
    EXPECT_EQ((*draws)[2].amount, 10);
    // Exactly what is there, and one more.
    EXPECT_TRUE(PlanDeduction(grants, 150, Timestamp(1000)).ok());
    auto short_of = PlanDeduction(grants, 151, Timestamp(1000));
    ASSERT_FALSE(short_of.ok());
    EXPECT_EQ(short_of.error().code, ErrorCode::kInsufficientCredits);
    EXPECT_EQ(short_of.error().param, "amount");
    // At its expiry instant a grant is gone.
    EXPECT_FALSE(GrantUsable(G("x", GrantType::kBundle, 1, 1000, 0), Timestamp(1000)));
}

TEST(CreditsTest, Validation) {
    for (int64_t bad : {int64_t{0}, int64_t{-1}, kCreditAmountMax + 1}) {
        EXPECT_EQ(ValidateCreditAmount(bad, "amount").error().param, "amount") << bad;
    }
    EXPECT_TRUE(ValidateCreditAmount(kCreditAmountMax, "amount").ok());
    EXPECT_TRUE(ValidateTransferId("deduct_123").ok());
    EXPECT_TRUE(ValidateTransferId("order:42").ok());
    for (std::string bad : {std::string(""), std::string("a b"), std::string(256, 'x'), std::string("period:sub_1:0"),
                            std::string("capture:r"), std::string("release:r"), std::string("reversal:d"),
                            std::string("expire:g:x")}) {
        EXPECT_EQ(ValidateTransferId(bad).error().param, "id");
    }
    EXPECT_EQ(ParseGrantType("gift").error().param, "type");
    EXPECT_STREQ(GrantTypeName(GrantType::kBundle), "bundle");
}

// An upgrade halfway through a 30-day period grants half the difference, rounded as money is; a downgrade grants
// nothing (it takes effect at the next period).
TEST(CreditsTest, UpgradeCreditsProrateTheDifferenceToTheSecond) {
    const Period p{Timestamp(0), Timestamp(30 * 86400)};
    struct Row {
        int64_t from, to, at, want;
    };
    const std::vector<Row> rows = {
        {1000, 5000, 15 * 86400, 2000},  // half the period left: half of 4000
        {1000, 5000, 0, 4000},           // at the start: all of it
        {1000, 5000, 30 * 86400 - 1, 0}, // the last second: 4000/2592000 rounds to 0
        {0, 3, 10 * 86400, 2},           // 3 × 2/3 = 2
        {0, 1, 15 * 86400, 1},           // 0.5 rounds half away from zero
        {5000, 1000, 15 * 86400, 0},     // a downgrade
        {1000, 1000, 15 * 86400, 0},
    };
    for (const auto& r : rows) {
        auto got = UpgradeCredits(r.from, r.to, p, Timestamp(r.at));
        ASSERT_TRUE(got.ok()) << r.from << "->" << r.to;
        EXPECT_EQ(*got, r.want) << r.from << "->" << r.to << " at " << r.at;
    }
    EXPECT_FALSE(UpgradeCredits(0, 10, p, Timestamp(30 * 86400)).ok());  // outside the period
}

// A settled hold keeps the first credits taken and gives the rest back last-taken first: a capture of |keep| spends
// what a deduction of |keep| would have.
TEST(CreditsTest, PlanReturnTable) {
    const std::vector<CreditDraw> held = {{"a", 30}, {"b", 20}, {"c", 10}};  // spend order a, b, c
    struct Row {
        int64_t keep;
        std::vector<std::pair<std::string, int64_t>> back;
    };
    const std::vector<Row> rows = {
        {60, {}},                                  // all captured: nothing back
        {55, {{"c", 5}}},                          // within the last grant
        {35, {{"c", 10}, {"b", 15}}},              // spans two grants
        {30, {{"c", 10}, {"b", 20}}},              // exactly the first grant kept
        {0, {{"c", 10}, {"b", 20}, {"a", 30}}},    // a release: everything back
    };
    for (const auto& row : rows) {
        auto back = PlanReturn(held, row.keep);
        ASSERT_TRUE(back.ok()) << row.keep;
        std::vector<std::pair<std::string, int64_t>> got;
        for (const auto& d : *back) got.emplace_back(d.grant, d.amount);
        EXPECT_EQ(got, row.back) << "keep " << row.keep;
    }
    EXPECT_EQ(PlanReturn(held, 61).error().param, "amount");
    EXPECT_EQ(PlanReturn(held, -1).error().param, "amount");
}

// A refund takes back the bundle's credits in proportion to what was refunded, cumulatively over partial refunds,
// never more than is left in the grant; the rest is recorded as spent (issue 13, item 5).
TEST(CreditsTest, PlanRefundTable) {
    struct Row {
        int64_t credits, paid, refunded, accounted, remaining;
        int64_t take, spent;
    };
    const std::vector<Row> rows = {
        {1000, 1000, 1000, 0, 1000, 1000, 0},  // full refund, nothing used: every credit back
        {1000, 1000, 1000, 0, 300, 300, 700},  // full refund after 700 were spent: 300 back, 700 recorded spent
        {1000, 1000, 500, 0, 1000, 500, 0},    // half refunded: half the credits
        {1000, 1000, 1000, 500, 500, 500, 0},  // the second half after the first half was taken back
        {1000, 1000, 500, 500, 500, 0, 0},     // the same refund seen again: nothing more
        {5000, 4500, 1, 0, 5000, 1, 0},        // 1 cent of 45.00 is 1.11 credits: 1
        {5000, 4500, 2, 0, 5000, 2, 0},        // 2.22 -> 2
        {5000, 4500, 9, 0, 5000, 10, 0},       // exactly 10
        {3, 2, 1, 0, 3, 2, 0},                 // 1.5 rounds half away from zero: 2
        {1000, 1000, 0, 0, 1000, 0, 0},        // nothing refunded
        {1000, 1000, 1000, 1000, 0, 0, 0},     // all accounted for already
        {1000, 1000, 1000, 200, 0, 0, 800},    // nothing left at all: the rest recorded spent
    };
    for (const auto& r : rows) {
        auto plan = PlanRefund(r.credits, r.paid, r.refunded, r.accounted, r.remaining);
        ASSERT_TRUE(plan.ok()) << r.credits << " " << r.refunded << "/" << r.paid;
        EXPECT_EQ(plan->take, r.take) << r.credits << " " << r.refunded << "/" << r.paid << " accounted " << r.accounted;
        EXPECT_EQ(plan->spent, r.spent) << r.credits << " " << r.refunded << "/" << r.paid << " accounted " << r.accounted;
    }
    // The most a bundle can hold, refunded in full, is exact (no overflow in the proportion).
    auto biggest = PlanRefund(kCreditAmountMax, INT64_MAX, INT64_MAX, 0, kCreditAmountMax);
    ASSERT_TRUE(biggest.ok());
    EXPECT_EQ(biggest->take, kCreditAmountMax);
    EXPECT_FALSE(PlanRefund(1000, 1000, 1001, 0, 1000).ok());  // more refunded than paid
    EXPECT_FALSE(PlanRefund(1000, 0, 0, 0, 1000).ok());
    EXPECT_FALSE(PlanRefund(1000, 1000, 10, 0, 1001).ok());
}

TEST(CreditsTest, AutoPurchaseRetryDelayTable) {
    const std::pair<int64_t, int64_t> rows[] = {{1, 300}, {2, 1800}, {3, 10800}, {4, 64800}, {5, 86400}, {50, 86400}};
    for (const auto& [failures, want] : rows) EXPECT_EQ(AutoPurchaseRetryDelay(failures).value(), want) << failures;
    EXPECT_FALSE(AutoPurchaseRetryDelay(0).ok());
}

TEST(CreditsTest, BundleValidation) {
    const CreditBundle ok{"credits_1000", "1,000 credits", 1000, Money(1000, *Currency::Parse("usd")), std::nullopt};
    EXPECT_TRUE(ValidateCreditBundle(ok).ok());
    auto with = [&](auto change) {
        CreditBundle b = ok;
        change(b);
        auto s = ValidateCreditBundle(b);
        return s.ok() ? std::string("ok") : s.error().param;
    };
    EXPECT_EQ(with([](CreditBundle& b) { b.id = "has space"; }), ".id");
    EXPECT_EQ(with([](CreditBundle& b) { b.credits = 0; }), ".credits");
    EXPECT_EQ(with([](CreditBundle& b) { b.credits = kCreditAmountMax + 1; }), ".credits");
    EXPECT_EQ(with([](CreditBundle& b) { b.price = Money(0, *Currency::Parse("usd")); }), ".unit_amount");
    EXPECT_EQ(with([](CreditBundle& b) { b.expires_in_days = 0; }), ".expires_in_days");
    EXPECT_EQ(with([](CreditBundle& b) { b.expires_in_days = 30; }), "ok");
    EXPECT_EQ(with([](CreditBundle& b) { b.name = ""; }), ".name");
}

}  // namespace
}  // namespace tally
