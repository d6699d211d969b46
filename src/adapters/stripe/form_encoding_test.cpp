#include "adapters/stripe/form_encoding.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace tally::stripe {
namespace {

namespace bj = boost::json;

TEST(FormEncodingTest, MatchesStripeNodeOutput) {
    // The example from ../shared/stripe/README.md, in stripe-node's order and escaping.
    const bj::object params{{"items", bj::array{bj::object{{"price", "price_A"}, {"quantity", 2}}}},
                            {"metadata", bj::object{{"order_id", "o 1&x"}}},
                            {"expand", bj::array{"latest_invoice"}}};
    EXPECT_EQ(EncodeForm(params),
              "items[0][price]=price_A&items[0][quantity]=2&metadata[order_id]=o%201%26x&expand[0]=latest_invoice");
}

TEST(FormEncodingTest, ScalarsAndEscapes) {
    EXPECT_EQ(EncodeForm({{"cancel_at_period_end", true}, {"description", nullptr}}),
              "cancel_at_period_end=true&description=");
    EXPECT_EQ(EncodeComponent("a-z_0.9~"), "a-z_0.9~");
    EXPECT_EQ(EncodeComponent("!*()'"), "%21%2A%28%29%27");  // encoded like qs, unlike encodeURIComponent
    EXPECT_EQ(EncodeComponent("Zoë/ü+="), "Zo%C3%AB%2F%C3%BC%2B%3D");
    EXPECT_EQ(EncodeComponent("k[0][x]"), "k[0][x]");
}

TEST(FormEncodingTest, DecodeIsTheInverse) {
    const bj::object params{{"customer", "cus_1"},
                            {"items", bj::array{bj::object{{"price", "price_A"}, {"quantity", "2"}},
                                                bj::object{{"price", "price_B"}}}},
                            {"metadata", bj::object{{"order id", "o 1&x=ü"}}},
                            {"expand", bj::array{"latest_invoice", "customer"}},
                            {"trial_end", ""}};
    auto decoded = DecodeForm(EncodeForm(params));
    ASSERT_TRUE(decoded.ok()) << decoded.error().message;
    EXPECT_EQ(bj::serialize(*decoded), bj::serialize(params));
}

TEST(FormEncodingTest, DecodeAcceptsEncodedBracketsAndPlus) {
    auto d = DecodeForm("metadata%5Bk%5D=a+b&lookup_keys[]=x&lookup_keys[1]=y");
    ASSERT_TRUE(d.ok()) << d.error().message;
    EXPECT_EQ(d->at("metadata").at("k").as_string(), "a b");
    EXPECT_EQ(d->at("lookup_keys").as_array().size(), 2u);
}

TEST(FormEncodingTest, DecodeRejectsMalformedInput) {
    for (const char* bad : {"a[b=1", "a]=1", "[x]=1", "a=1&a=2", "a=1&a[b]=2", "a=%zz", "a=%4",
                            "a[1][2][3][4][5][6][7][8]=1"}) {
        auto d = DecodeForm(bad);
        ASSERT_FALSE(d.ok()) << bad;
        EXPECT_EQ(d.error().code, ErrorCode::kInvalidArgument) << bad;
    }
    // Sparse indices stay an object rather than inventing array slots.
    auto sparse = DecodeForm("items[0]=a&items[2]=b");
    ASSERT_TRUE(sparse.ok());
    EXPECT_TRUE(sparse->at("items").is_object());
}

}  // namespace
}  // namespace tally::stripe
