// http::ParseRequest: what a connection makes of raw bytes, table-tested (the fuzzer's regressions included).
#include <gtest/gtest.h>

#include <string>

#include "adapters/http/server.hpp"

namespace tally::http {
namespace {

struct Case {
    const char* name;
    std::string bytes;
    int status;  // 0: parsed
};

TEST(HttpParseTest, RequestsAndRefusals) {
    const Case cases[] = {
        {"simple", "GET /v1/customers/cust_1?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", 0},
        {"empty (fuzz regression)", "", 400},
        {"chunked body cut after the last chunk (fuzz regression)",
         "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", 400},
        {"incomplete headers", "GET / HTTP/1.1\r\nHost: a\r\n", 400},
        {"raw space in the target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
        {"NUL in a header", std::string("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 27), 400},
        {"target over 8 KiB", "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\n\r\n", 414},
        {"request line over the header limit", "GET /" + std::string(20000, 'a') + " HTTP/1.1\r\n\r\n", 414},
        {"headers over 16 KiB", "GET / HTTP/1.1\r\nX: " + std::string(17000, 'v') + "\r\n\r\n", 431},
        {"body over 4 MiB", "POST / HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n" + std::string(10, 'x'), 413},
        {"not HTTP", "\x16\x03\x01 hello", 400},
    };
    for (const auto& c : cases) {
        auto r = ParseRequest(c.bytes);
        if (c.status == 0) {
            ASSERT_TRUE(std::holds_alternative<Request>(r)) << c.name;
        } else {
            ASSERT_TRUE(std::holds_alternative<Refusal>(r)) << c.name;
            EXPECT_EQ(std::get<Refusal>(r).status, c.status) << c.name;
        }
    }
}

TEST(HttpParseTest, PercentEncodedSlashesStayInsideTheirSegment) {
    auto r = ParseRequest("GET /v1/customers/a%2Fb/entitlements?q=a%26b+c HTTP/1.1\r\nHost: a\r\n\r\n");
    ASSERT_TRUE(std::holds_alternative<Request>(r));
    const auto& req = std::get<Request>(r);
    ASSERT_EQ(req.segments.size(), 4u);
    EXPECT_EQ(req.segments[2], "a/b");
    EXPECT_EQ(req.segments[3], "entitlements");
    EXPECT_EQ(req.query.at("q"), "a&b c");
}

}  // namespace
}  // namespace tally::http
