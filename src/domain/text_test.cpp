#include "domain/text.hpp"

#include <gtest/gtest.h>

namespace tally {
namespace {

struct Utf8Case {
    const char* name;
    std::string input;
    bool valid;
    std::string sanitized;
};

TEST(TextTest, Utf8ValidityAndSanitizing) {
    const std::string r = "\xEF\xBF\xBD";  // U+FFFD
    const Utf8Case cases[] = {
        {"empty", "", true, ""},
        {"ascii", "cust_123", true, "cust_123"},
        {"two-byte", "caf\xC3\xA9", true, "caf\xC3\xA9"},
        {"three-byte", "\xE2\x82\xAC", true, "\xE2\x82\xAC"},
        {"four-byte", "\xF0\x9F\x92\xB8", true, "\xF0\x9F\x92\xB8"},
        {"the issue's path %ff%fe", "\xFF\xFE", false, r + r},
        {"lone continuation", "a\x80" "b", false, "a" + r + "b"},
        {"overlong slash", "\xC0\xAF", false, r + r},
        {"overlong three-byte", "\xE0\x80\xAF", false, r + r + r},
        {"surrogate", "\xED\xA0\x80", false, r + r + r},
        {"above U+10FFFF", "\xF4\x90\x80\x80", false, r + r + r + r},
        {"truncated", "ok\xE2\x82", false, "ok" + r + r},
        {"NUL is valid UTF-8", std::string("a\0b", 3), true, std::string("a\0b", 3)},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(IsValidUtf8(c.input), c.valid) << c.name;
        EXPECT_EQ(SanitizeUtf8(c.input), c.sanitized) << c.name;
        EXPECT_TRUE(IsValidUtf8(SanitizeUtf8(c.input))) << c.name;
    }
}

TEST(TextTest, Blank) {
    EXPECT_TRUE(IsBlank(""));
    EXPECT_TRUE(IsBlank(" \t\r\n"));
    EXPECT_FALSE(IsBlank(" a "));
    EXPECT_FALSE(IsBlank("cust_1"));
}

}  // namespace
}  // namespace tally
