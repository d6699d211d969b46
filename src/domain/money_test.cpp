#include "domain/money.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <limits>

namespace tally {
namespace {

Currency C(const char* code) { return Currency::Parse(code).value(); }

TEST(CurrencyTest, ExponentsFollowIso4217) {
    struct Case { const char* code; int exponent; };
    for (const auto& c : {Case{"usd", 2}, Case{"USD", 2}, Case{"jpy", 0}, Case{"kwd", 3}, Case{"eur", 2}, Case{"krw", 0}}) {
        auto parsed = Currency::Parse(c.code);
        ASSERT_TRUE(parsed.ok()) << c.code;
        EXPECT_EQ(parsed->exponent(), c.exponent) << c.code;
    }
    EXPECT_EQ(C("USD").code(), "usd");
}

TEST(CurrencyTest, RejectsUnknownCodes) {
    for (const char* bad : {"", "us", "usdd", "xxx", "12$"}) {
        auto parsed = Currency::Parse(bad);
        ASSERT_FALSE(parsed.ok()) << bad;
        EXPECT_EQ(parsed.error().code, ErrorCode::kInvalidArgument);
    }
}

TEST(MoneyTest, AddSubtractMultiplyAreExact) {
    const Money a(3000, C("usd"));
    const Money b(1999, C("usd"));
    EXPECT_EQ(a.Add(b)->amount_minor(), 4999);
    EXPECT_EQ(a.Subtract(b)->amount_minor(), 1001);
    EXPECT_EQ(b.Subtract(a)->amount_minor(), -1001);
    EXPECT_EQ(a.Multiply(12)->amount_minor(), 36000);
}

TEST(MoneyTest, MixingCurrenciesIsAnError) {
    const Money usd(100, C("usd"));
    const Money eur(100, C("eur"));
    EXPECT_FALSE(usd.Add(eur).ok());
    EXPECT_FALSE(usd.Subtract(eur).ok());
}

TEST(MoneyTest, OverflowIsAnErrorNotAWrap) {
    const Money max(std::numeric_limits<int64_t>::max(), C("usd"));
    const Money min(std::numeric_limits<int64_t>::min(), C("usd"));
    const Money one(1, C("usd"));
    EXPECT_FALSE(max.Add(one).ok());
    EXPECT_FALSE(min.Subtract(one).ok());
    EXPECT_FALSE(max.Multiply(2).ok());
    EXPECT_FALSE(min.Multiply(-1).ok());
}

TEST(MoneyTest, DecimalStrings) {
    struct Case { int64_t minor; const char* currency; const char* text; };
    for (const auto& c : {Case{3000, "usd", "30.00"}, Case{5, "usd", "0.05"}, Case{-1, "usd", "-0.01"},
                          Case{5, "jpy", "5"}, Case{-1, "kwd", "-0.001"}, Case{120000, "usd", "1200.00"},
                          Case{std::numeric_limits<int64_t>::min(), "usd", "-92233720368547758.08"}}) {
        EXPECT_EQ(Money(c.minor, C(c.currency)).ToDecimalString(), c.text);
    }
}

TEST(MoneyTest, ParseDecimal) {
    struct Case { const char* text; const char* currency; int64_t minor; };
    for (const auto& c : {Case{"30", "usd", 3000}, Case{"30.5", "usd", 3050}, Case{"30.00", "usd", 3000},
                          Case{"0.01", "usd", 1}, Case{"-2.50", "usd", -250}, Case{"500", "jpy", 500},
                          Case{"1.234", "kwd", 1234}}) {
        auto parsed = Money::ParseDecimal(c.text, C(c.currency));
        ASSERT_TRUE(parsed.ok()) << c.text;
        EXPECT_EQ(parsed->amount_minor(), c.minor) << c.text;
    }
    for (const char* bad : {"", "-", ".", "1.2.3", "abc", "1.001", "99999999999999999999"}) {
        EXPECT_FALSE(Money::ParseDecimal(bad, C("usd")).ok()) << bad;
    }
    EXPECT_FALSE(Money::ParseDecimal("1.5", C("jpy")).ok());
}

}  // namespace
}  // namespace tally
