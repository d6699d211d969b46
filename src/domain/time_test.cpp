#include "domain/time.hpp"

#include <gtest/gtest.h>

namespace tally {
namespace {

Timestamp T(const char* text) { return ParseRfc3339(text).value(); }
const BillingInterval kMonthly{BillingInterval::Unit::kMonth, 1};
const BillingInterval kYearly{BillingInterval::Unit::kYear, 1};

TEST(TimeTest, Rfc3339RoundTrip) {
    EXPECT_EQ(T("1970-01-01T00:00:00Z").unix_seconds(), 0);
    EXPECT_EQ(T("2009-02-13T23:31:30Z").unix_seconds(), 1234567890);
    EXPECT_EQ(FormatRfc3339(Timestamp(1234567890)), "2009-02-13T23:31:30Z");
    for (const char* bad : {"", "2024-02-30T00:00:00Z", "2024-01-01T00:00:00", "2024-01-01 00:00:00Z",
                            "2024-13-01T00:00:00Z", "2024-01-01T24:00:00Z", "2024-01-01T00:00:00Zjunk"}) {
        EXPECT_FALSE(ParseRfc3339(bad).ok()) << bad;
    }
}

TEST(TimeTest, MonthEndAnchorClampsAndRecovers) {
    // Stripe: anchored on Jan 31 it bills Feb 28 (29 in leap years), Mar 31, Apr 30.
    struct Case { const char* anchor; int64_t n; const char* boundary; };
    const Case cases[] = {
        {"2023-01-31T10:00:00Z", 0, "2023-01-31T10:00:00Z"}, {"2023-01-31T10:00:00Z", 1, "2023-02-28T10:00:00Z"},
        {"2023-01-31T10:00:00Z", 2, "2023-03-31T10:00:00Z"}, {"2023-01-31T10:00:00Z", 3, "2023-04-30T10:00:00Z"},
        {"2024-01-31T10:00:00Z", 1, "2024-02-29T10:00:00Z"}, {"2024-01-30T00:00:00Z", 1, "2024-02-29T00:00:00Z"},
        {"2024-01-29T00:00:00Z", 1, "2024-02-29T00:00:00Z"}, {"2023-01-15T00:00:00Z", 12, "2024-01-15T00:00:00Z"},
        {"2023-12-31T23:59:59Z", 2, "2024-02-29T23:59:59Z"}, {"2023-08-31T00:00:00Z", 6, "2024-02-29T00:00:00Z"},
    };
    for (const auto& c : cases) {
        auto got = NthBoundary(T(c.anchor), kMonthly, c.n);
        ASSERT_TRUE(got.ok()) << c.anchor;
        EXPECT_EQ(FormatRfc3339(*got), c.boundary) << c.anchor << " n=" << c.n;
    }
}

TEST(TimeTest, YearlyLeapDayAnchor) {
    const Timestamp anchor = T("2024-02-29T12:00:00Z");
    EXPECT_EQ(FormatRfc3339(*NthBoundary(anchor, kYearly, 1)), "2025-02-28T12:00:00Z");
    EXPECT_EQ(FormatRfc3339(*NthBoundary(anchor, kYearly, 4)), "2028-02-29T12:00:00Z");
}

TEST(TimeTest, DaysWeeksAndCounts) {
    const Timestamp anchor = T("2024-03-01T00:00:00Z");
    EXPECT_EQ(FormatRfc3339(*NthBoundary(anchor, {BillingInterval::Unit::kDay, 1}, 30)), "2024-03-31T00:00:00Z");
    EXPECT_EQ(FormatRfc3339(*NthBoundary(anchor, {BillingInterval::Unit::kWeek, 2}, 1)), "2024-03-15T00:00:00Z");
    EXPECT_EQ(FormatRfc3339(*NthBoundary(anchor, {BillingInterval::Unit::kMonth, 3}, 1)), "2024-06-01T00:00:00Z");
    EXPECT_FALSE(NthBoundary(anchor, {BillingInterval::Unit::kMonth, 0}, 1).ok());
    EXPECT_FALSE(NthBoundary(anchor, kMonthly, -1).ok());
    EXPECT_FALSE(NthBoundary(anchor, kYearly, 100000).ok());
}

TEST(TimeTest, PeriodContainingIsHalfOpen) {
    const Timestamp anchor = T("2023-01-31T00:00:00Z");
    struct Case { const char* at; const char* start; const char* end; };
    const Case cases[] = {
        {"2023-01-31T00:00:00Z", "2023-01-31T00:00:00Z", "2023-02-28T00:00:00Z"},
        {"2023-02-27T23:59:59Z", "2023-01-31T00:00:00Z", "2023-02-28T00:00:00Z"},
        {"2023-02-28T00:00:00Z", "2023-02-28T00:00:00Z", "2023-03-31T00:00:00Z"},
        {"2023-04-30T00:00:00Z", "2023-04-30T00:00:00Z", "2023-05-31T00:00:00Z"},
        {"2025-12-31T00:00:00Z", "2025-12-31T00:00:00Z", "2026-01-31T00:00:00Z"},
    };
    for (const auto& c : cases) {
        auto p = PeriodContaining(anchor, kMonthly, T(c.at));
        ASSERT_TRUE(p.ok()) << c.at;
        EXPECT_EQ(FormatRfc3339(p->start), c.start) << c.at;
        EXPECT_EQ(FormatRfc3339(p->end), c.end) << c.at;
        EXPECT_TRUE(p->Contains(T(c.at)));
        EXPECT_FALSE(p->Contains(p->end));
    }
    EXPECT_FALSE(PeriodContaining(anchor, kMonthly, T("2023-01-30T00:00:00Z")).ok());
}

}  // namespace
}  // namespace tally
