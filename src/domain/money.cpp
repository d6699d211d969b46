#include "domain/money.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <utility>

namespace tally {
namespace {

struct CurrencyInfo {
    const char* code;
    int exponent;
};

// ISO 4217 exponents for the currencies Stripe settles in; zero- and three-decimal ones as Stripe lists them.
constexpr std::array kCurrencies = {
    CurrencyInfo{"aed", 2}, CurrencyInfo{"aud", 2}, CurrencyInfo{"bhd", 3}, CurrencyInfo{"bif", 0},
    CurrencyInfo{"brl", 2}, CurrencyInfo{"cad", 2}, CurrencyInfo{"chf", 2}, CurrencyInfo{"clp", 0},
    CurrencyInfo{"cny", 2}, CurrencyInfo{"czk", 2}, CurrencyInfo{"djf", 0}, CurrencyInfo{"dkk", 2},
    CurrencyInfo{"eur", 2}, CurrencyInfo{"gbp", 2}, CurrencyInfo{"gnf", 0}, CurrencyInfo{"hkd", 2},
    CurrencyInfo{"huf", 2}, CurrencyInfo{"idr", 2}, CurrencyInfo{"ils", 2}, CurrencyInfo{"inr", 2},
    CurrencyInfo{"isk", 0}, CurrencyInfo{"jod", 3}, CurrencyInfo{"jpy", 0}, CurrencyInfo{"kmf", 0},
    CurrencyInfo{"krw", 0}, CurrencyInfo{"kwd", 3}, CurrencyInfo{"mga", 0}, CurrencyInfo{"mxn", 2},
    CurrencyInfo{"myr", 2}, CurrencyInfo{"nok", 2}, CurrencyInfo{"nzd", 2}, CurrencyInfo{"omr", 3},
    CurrencyInfo{"php", 2}, CurrencyInfo{"pln", 2}, CurrencyInfo{"pyg", 0}, CurrencyInfo{"ron", 2},
    CurrencyInfo{"rwf", 0}, CurrencyInfo{"sek", 2}, CurrencyInfo{"sgd", 2}, CurrencyInfo{"thb", 2},
    CurrencyInfo{"tnd", 3}, CurrencyInfo{"try", 2}, CurrencyInfo{"twd", 2}, CurrencyInfo{"ugx", 0},
    CurrencyInfo{"usd", 2}, CurrencyInfo{"vnd", 0}, CurrencyInfo{"vuv", 0}, CurrencyInfo{"xaf", 0},
    CurrencyInfo{"xof", 0}, CurrencyInfo{"xpf", 0}, CurrencyInfo{"zar", 2},
};

int64_t Pow10(int n) {
    int64_t p = 1;
    for (int i = 0; i < n; ++i) p *= 10;
    return p;
}

}  // namespace

Result<Currency> Currency::Parse(std::string_view code) {
    if (code.size() != 3) return InvalidArgument("currency must be a three-letter ISO 4217 code", "currency");
    std::string lower(code);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
    for (const auto& info : kCurrencies) {
        if (lower == info.code) return Currency(lower, info.exponent);
    }
    return InvalidArgument("unknown currency '" + std::string(code) + "'", "currency");
}

Result<Money> Money::Add(const Money& other) const {
    if (!(currency_ == other.currency_)) {
        return InvalidArgument("cannot add " + other.currency_.code() + " to " + currency_.code());
    }
    int64_t sum = 0;
    if (__builtin_add_overflow(amount_minor_, other.amount_minor_, &sum)) return InvalidArgument("amount overflow");
    return Money(sum, currency_);
}

Result<Money> Money::Subtract(const Money& other) const {
    if (!(currency_ == other.currency_)) {
        return InvalidArgument("cannot subtract " + other.currency_.code() + " from " + currency_.code());
    }
    int64_t diff = 0;
    if (__builtin_sub_overflow(amount_minor_, other.amount_minor_, &diff)) return InvalidArgument("amount overflow");
    return Money(diff, currency_);
}

Result<Money> Money::Multiply(int64_t factor) const {
    int64_t product = 0;
    if (__builtin_mul_overflow(amount_minor_, factor, &product)) return InvalidArgument("amount overflow");
    return Money(product, currency_);
}

std::string Money::ToDecimalString() const {
    const auto exp = static_cast<size_t>(currency_.exponent());
    // Work in unsigned to print INT64_MIN correctly.
    const bool negative = amount_minor_ < 0;
    const uint64_t magnitude =
        negative ? (~static_cast<uint64_t>(amount_minor_) + 1) : static_cast<uint64_t>(amount_minor_);
    std::string out = std::to_string(magnitude);
    if (exp > 0) {
        if (out.size() <= exp) out.insert(0, exp + 1 - out.size(), '0');
        out.insert(out.size() - exp, 1, '.');
    }
    if (negative) out.insert(0, 1, '-');
    return out;
}

Result<Money> Money::ParseDecimal(std::string_view text, const Currency& currency) {
    if (text.empty()) return InvalidArgument("empty amount");
    bool negative = false;
    size_t i = 0;
    if (text[0] == '-') {
        negative = true;
        i = 1;
    }
    int64_t whole = 0;
    int64_t frac = 0;
    int frac_digits = 0;
    bool seen_dot = false;
    bool seen_digit = false;
    for (; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '.' && !seen_dot) {
            seen_dot = true;
            continue;
        }
        if (c < '0' || c > '9') return InvalidArgument("amount '" + std::string(text) + "' is not a decimal number");
        seen_digit = true;
        if (seen_dot) {
            if (++frac_digits > currency.exponent()) {
                return InvalidArgument("amount '" + std::string(text) + "' has more decimals than " + currency.code() +
                                       " allows (" + std::to_string(currency.exponent()) + ")");
            }
            frac = frac * 10 + (c - '0');
        } else if (__builtin_mul_overflow(whole, 10, &whole) || __builtin_add_overflow(whole, c - '0', &whole)) {
            return InvalidArgument("amount overflow");
        }
    }
    if (!seen_digit) return InvalidArgument("amount '" + std::string(text) + "' is not a decimal number");
    frac *= Pow10(currency.exponent() - frac_digits);
    int64_t minor = 0;
    if (__builtin_mul_overflow(whole, Pow10(currency.exponent()), &minor) || __builtin_add_overflow(minor, frac, &minor)) {
        return InvalidArgument("amount overflow");
    }
    return Money(negative ? -minor : minor, currency);
}

}  // namespace tally
