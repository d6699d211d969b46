#include "domain/proration.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace tally {
namespace {

__extension__ typedef __int128 Int128;  // NOLINT(modernize-use-using)

Timestamp T(const std::string& text) { return ParseRfc3339(text).value(); }

BillingInterval Interval(const std::string& unit) { return BillingInterval{ParseIntervalUnit(unit).value(), 1}; }

TEST(ProrationTest, GoldenCases) {
    std::ifstream in(std::string(TALLY_SOURCE_DIR) + "/tests/golden/proration.txt");
    ASSERT_TRUE(in) << "tests/golden/proration.txt not found";
    std::string line;
    int cases = 0;
    while (std::getline(in, line)) {
        if (line.empty() || line[0] == '#') continue;
        std::istringstream row(line);
        std::string name, from_interval, to_interval, currency, start, end, at, new_end;
        int64_t from = 0, to = 0, credit = 0, charge = 0, net = 0;
        row >> name >> from >> from_interval >> to >> to_interval >> currency >> start >> end >> at >> credit >> charge >>
            net >> new_end;
        ASSERT_FALSE(row.fail()) << "malformed golden row: " << line;
        const Currency cur = Currency::Parse(currency).value();
        auto p = ProrateChange(Money(from, cur), Interval(from_interval), Money(to, cur), Interval(to_interval),
                               Period{T(start), T(end)}, T(at));
        ASSERT_TRUE(p.ok()) << name << ": " << p.error().message;
        EXPECT_EQ(p->credit.amount_minor(), credit) << name;
        EXPECT_EQ(p->charge.amount_minor(), charge) << name;
        EXPECT_EQ(p->net.amount_minor(), net) << name;
        EXPECT_EQ(p->period.start, T(at)) << name;
        EXPECT_EQ(p->period.end, T(new_end)) << name;
        EXPECT_EQ(p->anchor_reset, from_interval != to_interval) << name;
        EXPECT_EQ(p->net.currency(), cur) << name;
        ++cases;
    }
    EXPECT_GE(cases, 10);
}

TEST(ProrationTest, RejectsDatesOutsideThePeriodAndMixedCurrencies) {
    const Currency usd = Currency::Parse("usd").value();
    const Currency eur = Currency::Parse("eur").value();
    const Period april{T("2024-04-01T00:00:00Z"), T("2024-05-01T00:00:00Z")};
    const BillingInterval monthly = Interval("month");
    for (const char* at : {"2024-03-31T23:59:59Z", "2024-05-01T00:00:00Z"}) {
        auto p = ProrateChange(Money(1000, usd), monthly, Money(2000, usd), monthly, april, T(at));
        ASSERT_FALSE(p.ok()) << at;
        EXPECT_EQ(p.error().param, "proration_date");
    }
    EXPECT_FALSE(ProrateChange(Money(1000, usd), monthly, Money(2000, eur), monthly, april, april.start).ok());
    EXPECT_FALSE(ProrateAmount(Money(1000, usd), Period{april.start, april.start}, april.start).ok());
}

TEST(ProrationTest, LargeAmountsDoNotOverflow) {
    // amount × seconds exceeds int64 here; the 128-bit intermediate keeps it exact.
    const Currency usd = Currency::Parse("usd").value();
    const Period year{T("2024-01-01T00:00:00Z"), T("2025-01-01T00:00:00Z")};
    const int64_t huge = INT64_MAX / 2;
    auto half = ProrateAmount(Money(huge, usd), year, T("2024-07-02T00:00:00Z"));
    ASSERT_TRUE(half.ok());
    EXPECT_EQ(half->amount_minor(), static_cast<int64_t>((static_cast<Int128>(huge) * 183 + 183) / 366));
}

}  // namespace
}  // namespace tally
