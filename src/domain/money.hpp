#pragma once
// Exact money: integer minor units and an ISO 4217 currency. No floating point anywhere.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "domain/result.hpp"

namespace tally {

/// An ISO 4217 currency, stored as Stripe spells it (lowercase, e.g. "usd"). Value type.
class Currency {
public:
    /// Parses a three-letter code (any case); kInvalidArgument if it is not a known ISO 4217 currency.
    static Result<Currency> Parse(std::string_view code);
    const std::string& code() const { return code_; }
    /// Number of minor-unit digits: USD 2, JPY 0, KWD 3 (ISO 4217 exponent).
    int exponent() const { return exponent_; }
    bool operator==(const Currency& other) const { return code_ == other.code_; }

private:
    Currency(std::string code, int exponent) : code_(std::move(code)), exponent_(exponent) {}
    std::string code_;
    int exponent_ = 2;
};

/// An amount in minor units of one currency. Arithmetic is checked: mixing currencies or overflowing
/// int64 is an error, never a wrap. Value type.
class Money {
public:
    Money(int64_t amount_minor, Currency currency) : amount_minor_(amount_minor), currency_(std::move(currency)) {}
    int64_t amount_minor() const { return amount_minor_; }
    const Currency& currency() const { return currency_; }

    /// Sum; kInvalidArgument on currency mismatch or int64 overflow.
    Result<Money> Add(const Money& other) const;
    /// Difference; kInvalidArgument on currency mismatch or int64 overflow.
    Result<Money> Subtract(const Money& other) const;
    /// Product by an integer factor; kInvalidArgument on overflow.
    Result<Money> Multiply(int64_t factor) const;
    /// Major-unit decimal string for display, e.g. 3000 usd -> "30.00", 5 jpy -> "5", -1 kwd -> "-0.001".
    std::string ToDecimalString() const;
    /// Parses a major-unit decimal ("30", "30.5", "30.00") exactly; kInvalidArgument on more fraction
    /// digits than the currency has, on junk, or on overflow.
    static Result<Money> ParseDecimal(std::string_view text, const Currency& currency);

    bool operator==(const Money& other) const = default;

private:
    int64_t amount_minor_;
    Currency currency_;
};

}  // namespace tally
