#include "domain/event_order.hpp"

#include <gtest/gtest.h>

namespace tally {
namespace {

TEST(EventOrderTest, TypeRank) {
    EXPECT_EQ(EventTypeRank("customer.subscription.created"), 0);
    EXPECT_EQ(EventTypeRank("customer.subscription.updated"), 1);
    EXPECT_EQ(EventTypeRank("customer.subscription.paused"), 1);
    EXPECT_EQ(EventTypeRank("customer.subscription.deleted"), 2);
}

TEST(EventOrderTest, RuleTable) {
    struct Case {
        const char* name;
        EventStamp incoming;
        EventStamp stored;
        bool in_follows;
        bool st_follows;
        bool want;
        bool in_later = false;
    };
    const Case cases[] = {
        {"later second wins", {11, 0, "evt_a", false}, {10, 2, "evt_b", true}, false, false, true},
        {"earlier second loses", {9, 2, "evt_a", true}, {10, 0, "evt_b", false}, true, false, false},
        {"terminal sticks in same second", {10, 1, "evt_z", false}, {10, 2, "evt_a", true}, true, false, false},
        {"terminal arrives", {10, 2, "evt_a", true}, {10, 1, "evt_z", false}, false, false, true},
        {"chain evidence", {10, 1, "evt_a", false}, {10, 1, "evt_z", false}, true, false, true},
        {"chain evidence against", {10, 1, "evt_z", false}, {10, 1, "evt_a", false}, false, true, false},
        {"created before updated", {10, 0, "evt_z", false}, {10, 1, "evt_a", false}, false, false, false},
        {"updated after created", {10, 1, "evt_a", false}, {10, 0, "evt_z", false}, false, false, true},
        {"id tiebreak", {10, 1, "evt_b", false}, {10, 1, "evt_a", false}, false, false, true},
        {"same event", {10, 1, "evt_a", false}, {10, 1, "evt_a", false}, false, false, false},
        {"mirror images: received later wins", {10, 1, "evt_a", false}, {10, 1, "evt_z", false}, true, true, true, true},
        {"mirror images: received earlier loses", {10, 1, "evt_z", false}, {10, 1, "evt_a", false}, true, true, false,
         false},
        {"arrival order only for mirror images", {10, 1, "evt_a", false}, {10, 1, "evt_z", false}, false, false, false,
         true},
    };
    for (const auto& c : cases) {
        EXPECT_EQ(Supersedes(c.incoming, c.stored, c.in_follows, c.st_follows, c.in_later), c.want) << c.name;
    }
}

TEST(EventOrderTest, RuleIsAntisymmetricForDistinctEvents) {
    const EventStamp stamps[] = {{10, 0, "evt_a", false}, {10, 1, "evt_b", false}, {10, 1, "evt_c", false},
                                 {10, 2, "evt_d", true}, {11, 1, "evt_e", false}};
    for (const auto& x : stamps) {
        for (const auto& y : stamps) {
            if (x.event_id == y.event_id) continue;
            EXPECT_NE(Supersedes(x, y, false, false, false), Supersedes(y, x, false, false, true))
                << x.event_id << y.event_id;
            EXPECT_NE(Supersedes(x, y, true, true, false), Supersedes(y, x, true, true, true)) << x.event_id << y.event_id;
        }
    }
}

TEST(EventOrderTest, FollowsFrom) {
    const FieldMap earlier = {{"status", "\"trialing\""}, {"cancel_at_period_end", "false"}};
    EXPECT_TRUE(FollowsFrom({{"status", "\"trialing\""}}, earlier));
    EXPECT_FALSE(FollowsFrom({{"status", "\"active\""}}, earlier));
    EXPECT_FALSE(FollowsFrom({{"missing", "1"}}, earlier));
    EXPECT_FALSE(FollowsFrom({}, earlier));
}

}  // namespace
}  // namespace tally
