#include "domain/csv.hpp"

#include <gtest/gtest.h>

namespace tally {
namespace {

TEST(CsvText, QuotesWhatRfc4180RequiresAndDisarmsFormulas) {
    struct Case {
        std::string in;
        std::string want;
    };
    const Case cases[] = {
        {"", ""},
        {"plain", "plain"},
        {"a,b", "\"a,b\""},
        {"say \"hi\"", "\"say \"\"hi\"\"\""},
        {"two\nlines", "\"two\nlines\""},
        {"cr\rhere", "\"cr\rhere\""},
        {"=SUM(A1:A9)", "'=SUM(A1:A9)"},
        {"+1", "'+1"},
        {"-1", "'-1"},
        {"@cmd", "'@cmd"},
        {"\tx", "'\tx"},
        {"=HYPERLINK(\"x\",\"y\")", "\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\""},
        {"a=b", "a=b"},
        {"caf\xc3\xa9", "caf\xc3\xa9"},
    };
    for (const auto& c : cases) EXPECT_EQ(CsvText(c.in), c.want) << c.in;
}

TEST(CsvRecord, JoinsWithCommasAndEndsInCrlf) {
    EXPECT_EQ(CsvRecord({"a", "1", ""}), "a,1,\r\n");
    EXPECT_EQ(CsvRecord({}), "\r\n");
}

}  // namespace
}  // namespace tally
