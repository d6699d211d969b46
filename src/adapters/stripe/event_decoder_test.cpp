#include "adapters/stripe/event_decoder.hpp"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <fstream>
#include <sstream>
#include <vector>

namespace tally {
namespace {

namespace bj = boost::json;

bj::object Fixture(const char* resource) {
    std::ifstream in(std::string(TALLY_SOURCE_DIR) + "/tests/fixtures/fixtures3.json");
    std::ostringstream ss;
    ss << in.rdbuf();
    return bj::parse(ss.str()).at("resources").at(resource).as_object();
}

std::string Event(const char* type, bj::object object, bj::object previous = {}) {
    bj::object data{{"object", std::move(object)}};
    if (!previous.empty()) data["previous_attributes"] = std::move(previous);
    return bj::serialize(bj::object{{"id", "evt_1"}, {"object", "event"}, {"type", type}, {"created", 1700000000},
                                    {"livemode", false}, {"data", std::move(data)}});
}

// DecodeEnvelope answers from a SAX pass when it can and from the DOM otherwise; Decode always uses the DOM.
// Whatever the body, the two must agree: same id, type and created, or the same error.
TEST(EventDecoderTest, EnvelopeFastPathAgreesWithTheDomOnOddBodies) {
    const std::string long_type(256, 't');
    const std::vector<std::string> bodies = {
        R"({"id":"evt_1","object":"event","type":"ping.test","created":1700000000})",
        R"({"created":1700000000,"type":"ping.test","id":"evt_1"})",
        R"({"id":"evt_1","type":"ping.test","created":1700000000,"data":{"object":{"id":"sub_9","type":"x","created":5}}})",
        R"({"\u0069d":"evt_esc","type":"ping\u002etest","created":1700000000})",
        R"({"id":"evt_1","id":"evt_2","type":"ping.test","created":1700000000})",
        R"({"id":null,"type":"ping.test","created":1700000000})",
        R"({"id":7,"type":"ping.test","created":1700000000})",
        R"({"id":"evt_1","type":"ping.test","created":"1700000000"})",
        R"({"id":"evt_1","type":"ping.test","created":1.7e9})",
        R"({"id":"evt_1","type":"ping.test","created":18446744073709551615})",
        R"({"id":"evt_1","type":"ping.test","created":-5})",
        R"({"id":"evt_1","type":"ping.test"})",
        R"({"id":"evt_1","object":"customer","type":"ping.test","created":1})",
        R"({"id":"evt_1","object":null,"type":"ping.test","created":1})",
        R"({"id":"","type":"ping.test","created":1})",
        R"({"id":"evt_1","type":")" + long_type + R"(","created":1})",
        R"({"id":"evt_1","type":["ping"],"created":1})",
        R"(["id","evt_1"])",
        R"("evt_1")",
        R"({"id":"evt_1","type":"ping.test","created":1)",
        R"({"id":"evt_1","type":"ping.test","created":1} trailing)",
        "",
    };
    StripeEventDecoder decoder;
    for (const std::string& body : bodies) {
        auto fast = decoder.DecodeEnvelope(body);
        auto dom = decoder.Decode(body);
        ASSERT_EQ(fast.ok(), dom.ok()) << body;
        if (fast.ok()) {
            EXPECT_EQ(fast->id.str(), dom->id.str()) << body;
            EXPECT_EQ(fast->type, dom->type) << body;
            EXPECT_EQ(fast->created.unix_seconds(), dom->created.unix_seconds()) << body;
        } else {
            EXPECT_EQ(fast.error().message, dom.error().message) << body;
            EXPECT_EQ(fast.error().param, dom.error().param) << body;
        }
    }
    // And the fast path reads the right fields: the top-level ones, escapes decoded.
    EXPECT_EQ(decoder.DecodeEnvelope(bodies[2])->id.str(), "evt_1");
    EXPECT_EQ(decoder.DecodeEnvelope(bodies[3])->id.str(), "evt_esc");
    EXPECT_EQ(decoder.DecodeEnvelope(bodies[3])->type, "ping.test");
}

TEST(EventDecoderTest, DecodesStripesOwnSubscriptionFixture) {
    bj::object sub = Fixture("subscription");
    sub["items"].as_object()["data"].as_array()[0].as_object()["price"].as_object()["lookup_key"] = "pro_monthly";
    StripeEventDecoder decoder;
    auto event = decoder.Decode(Event("customer.subscription.updated", sub, {{"status", "trialing"}}));
    ASSERT_TRUE(event.ok()) << event.error().message << " " << event.error().param;
    const auto& s = std::get<StripeSubscriptionData>(event->object);
    EXPECT_EQ(s.id.str(), "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw");
    EXPECT_EQ(s.customer.str(), "cus_QXg1o8vcGmoR32");
    EXPECT_EQ(s.status, SubscriptionStatus::kActive);
    EXPECT_EQ(s.price_id, "price_1PgafmB7WZ01zgkW6dKueIc5");
    EXPECT_EQ(s.price_lookup_key, "pro_monthly");
    EXPECT_EQ(s.unit_amount_minor, 2000);
    EXPECT_EQ(s.interval.unit, BillingInterval::Unit::kMonth);
    EXPECT_EQ(s.current_period_end.unix_seconds(), 976287773);  // item-level period (current API)
    // Chain evidence: an update whose previous_attributes match the other event's object came after it.
    bj::object trialing = sub;
    trialing["status"] = "trialing";
    const std::string created = Event("customer.subscription.created", trialing);
    const std::string updated = Event("customer.subscription.updated", sub, {{"status", "trialing"}});
    auto evidence = decoder.ChainEvidence(updated, created);
    ASSERT_TRUE(evidence.ok());
    EXPECT_TRUE(evidence->first);    // updated follows created
    EXPECT_FALSE(evidence->second);  // created has no previous_attributes: it proves nothing
    auto reversed = decoder.ChainEvidence(created, updated);
    ASSERT_TRUE(reversed.ok());
    EXPECT_FALSE(reversed->first);
    EXPECT_TRUE(reversed->second);
    // previous_attributes that do not match the other object prove nothing.
    const std::string unrelated = Event("customer.subscription.updated", sub, {{"status", "past_due"}});
    EXPECT_FALSE(decoder.ChainEvidence(unrelated, created)->first);
    EXPECT_FALSE(decoder.ChainEvidence("not json", created).ok());
}

TEST(EventDecoderTest, DecodesCustomerInvoiceCheckoutAndPaymentFixtures) {
    StripeEventDecoder decoder;
    bj::object customer = Fixture("customer");
    customer["metadata"] = bj::object{{"external_id", "user_42"}};
    auto c = decoder.Decode(Event("customer.created", customer));
    ASSERT_TRUE(c.ok()) << c.error().message;
    EXPECT_EQ(std::get<StripeCustomerData>(c->object).external_id, "user_42");

    bj::object invoice = Fixture("invoice");
    invoice["parent"] = bj::object{{"type", "subscription_details"},
                                   {"subscription_details", bj::object{{"subscription", "sub_9"}}}};
    auto i = decoder.Decode(Event("invoice.payment_failed", invoice));
    ASSERT_TRUE(i.ok()) << i.error().message;
    EXPECT_EQ(std::get<StripeInvoiceData>(i->object).subscription_id, "sub_9");
    EXPECT_EQ(std::get<StripeInvoiceData>(i->object).amount_due_minor, 1000);

    auto k = decoder.Decode(Event("checkout.session.completed", Fixture("checkout.session")));
    ASSERT_TRUE(k.ok()) << k.error().message;
    auto p = decoder.Decode(Event("payment_intent.succeeded", Fixture("payment_intent")));
    ASSERT_TRUE(p.ok()) << p.error().message;
    EXPECT_EQ(std::get<StripePaymentData>(p->object).amount_minor, 1099);
    auto ch = decoder.Decode(Event("charge.refunded", Fixture("charge")));
    ASSERT_TRUE(ch.ok()) << ch.error().message;
    EXPECT_EQ(std::get<StripePaymentData>(ch->object).object, "charge");
}

TEST(EventDecoderTest, UnhandledTypesDecodeWithoutAnObject) {
    StripeEventDecoder decoder;
    auto e = decoder.Decode(Event("plan.created", Fixture("plan")));
    ASSERT_TRUE(e.ok());
    EXPECT_TRUE(std::holds_alternative<std::monostate>(e->object));
}

TEST(EventDecoderTest, ErrorsNameTheField) {
    StripeEventDecoder decoder;
    struct Case { std::string payload; const char* param; };
    bj::object bad_status = Fixture("subscription");
    bad_status["status"] = "sleeping";
    bj::object no_customer = Fixture("subscription");
    no_customer.erase("customer");
    const Case cases[] = {
        {"{", ""},
        {"[]", ""},
        {R"({"type":"x","created":1})", "id"},
        {R"({"id":"evt_1","created":1})", "type"},
        {R"({"id":"evt_1","type":"x","created":"yesterday"})", "created"},
        {R"({"id":"evt_1","type":"x","created":1,"object":"charge"})", "object"},
        {Event("customer.subscription.updated", bad_status), "data.object.status"},
        {Event("customer.subscription.updated", no_customer), "data.object.customer"},
        {R"({"id":"evt_1","type":"invoice.paid","created":1,"data":{"object":[]}})", "data.object"},
    };
    for (const auto& c : cases) {
        auto e = decoder.Decode(c.payload);
        ASSERT_FALSE(e.ok()) << c.payload.substr(0, 80);
        EXPECT_EQ(e.error().code, ErrorCode::kInvalidArgument);
        EXPECT_EQ(e.error().param, c.param) << e.error().message;
    }
}

}  // namespace
}  // namespace tally
