// Organizations on both stores (issue 11): the customer profile and its list filters and pagination, members and
// their role rules under concurrent writers, customer sessions and their expiry on a manual clock, and the events of
// profile and member changes.
#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <atomic>
#include <thread>

#include "adapters/config/catalog_json.hpp"
#include "adapters/http/json_views.hpp"
#include "adapters/openssl_secret_hasher.hpp"
#include "app/billing_service.hpp"
#include "app/event_outbox.hpp"
#include "app/member_service.hpp"
#include "app/stripe_customer_sync.hpp"
#include "test_store.hpp"
#include "test_support.hpp"

namespace tally {
namespace {

using testing::ManualClock;
using testing::StoreKind;

constexpr int64_t kT0 = 1'700'000'000;

struct Harness {
    explicit Harness(StoreKind kind) : db(kind) {}
    testing::TestStore db;
    ManualClock clock{kT0};
    Catalog catalog = LoadCatalogFile(std::string(TALLY_SOURCE_DIR) + "/config/pricing.json").value();
    std::unique_ptr<Store> store = db.Open();
    http::JsonObjectRenderer renderer;
    EventOutbox outbox{renderer, clock};
    OpenSslSecretHasher hasher;
    BillingService billing{*store, catalog, clock, BillingConfig{}, &outbox};
    MemberService members{*store, billing, clock, hasher};

    CustomerView Create(const std::string& external_id, const CustomerInput& input) {
        std::optional<CustomerView> out;
        Status s = store->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(auto created, billing.CreateCustomer(tx, external_id, input));
            out = created.first;
            return {};
        });
        EXPECT_TRUE(s.ok()) << s.error().message;
        return *out;
    }
    CustomerView Organization(const std::string& external_id) {
        CustomerInput in;
        in.type = CustomerType::kOrganization;
        return Create(external_id, in);
    }
    Result<MemberRecord> Add(const CustomerId& org, const std::string& user, MemberRole role,
                             std::optional<MemberRole> actor = std::nullopt) {
        std::optional<MemberRecord> out;
        TALLY_TRY(store->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, members.Add(tx, org, user, "", role, actor, "test"));
            return {};
        }));
        return *out;
    }
    Result<MemberRecord> Remove(const CustomerId& org, const std::string& user) {
        std::optional<MemberRecord> out;
        TALLY_TRY(store->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, members.Remove(tx, org, user, std::nullopt, "test"));
            return {};
        }));
        return *out;
    }
    std::vector<AppEventRecord> Events(const std::string& type) {  // oldest first
        std::vector<AppEventRecord> events;
        EXPECT_TRUE(store->Read([&](StoreTx& tx) -> Status {
            AppEventFilter filter;
            filter.limit = 1000;
            filter.type = type;
            TALLY_ASSIGN_OR_RETURN(events, tx.events().ListEvents(filter));
            return {};
        }).ok());
        std::reverse(events.begin(), events.end());
        return events;
    }
};

class OrganizationsTest : public ::testing::TestWithParam<StoreKind> {};
INSTANTIATE_TEST_SUITE_P(Stores, OrganizationsTest, testing::kBothStores, testing::StoreKindName);

std::vector<std::string> Ids(const CustomerPage& page) {
    std::vector<std::string> out;
    for (const auto& v : page.data) out.push_back(v.customer.id.str());
    return out;
}

TEST_P(OrganizationsTest, ProfileRoundTripsAndListsFilterAndPageNewestFirst) {
    Harness h(GetParam());
    ASSERT_TRUE(h.store);
    CustomerInput a;
    a.type = CustomerType::kOrganization;
    a.auth_provider = "okta";
    a.company = "Acme";
    a.email_verified = true;
    a.metadata = MetadataUpdate{false, {{"tier", "gold"}, {"region", "eu"}, {"quote", "a \"b\" \\ c"}}};
    const CustomerView org = h.Create("org_a", a);
    h.clock.Advance(1);
    CustomerInput b;
    b.auth_provider = "google";
    b.company = "Acme";
    b.metadata = MetadataUpdate{false, {{"tier", "gold"}}};
    const CustomerView person = h.Create("user_b", b);
    h.clock.Advance(1);
    const CustomerView other = h.Create("user_c", CustomerInput{});

    auto got = h.billing.GetCustomer(org.customer.id);
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->customer.type, CustomerType::kOrganization);
    EXPECT_EQ(got->customer.auth_provider, "okta");
    EXPECT_EQ(got->customer.company, "Acme");
    EXPECT_TRUE(got->customer.email_verified);
    EXPECT_EQ(got->customer.metadata, (Metadata{{"tier", "gold"}, {"region", "eu"}, {"quote", "a \"b\" \\ c"}}));

    const auto list = [&](CustomerFilter f) {
        auto page = h.billing.ListCustomers(std::move(f));
        EXPECT_TRUE(page.ok()) << page.error().message;
        return page.ok() ? *page : CustomerPage{};
    };
    CustomerFilter all;
    all.limit = 10;
    EXPECT_EQ(Ids(list(all)), (std::vector<std::string>{other.customer.id.str(), person.customer.id.str(),
                                                        org.customer.id.str()}));
    CustomerFilter f = all;
    f.company = "Acme";
    EXPECT_EQ(Ids(list(f)), (std::vector<std::string>{person.customer.id.str(), org.customer.id.str()}));
    f.type = CustomerType::kIndividual;
    EXPECT_EQ(Ids(list(f)), (std::vector<std::string>{person.customer.id.str()}));
    f = all;
    f.metadata = {{"tier", "gold"}, {"region", "eu"}};
    EXPECT_EQ(Ids(list(f)), (std::vector<std::string>{org.customer.id.str()}));
    f.metadata = {{"quote", "a \"b\" \\ c"}};
    EXPECT_EQ(Ids(list(f)), (std::vector<std::string>{org.customer.id.str()}));
    f.metadata = {{"tier", "silver"}};
    EXPECT_TRUE(list(f).data.empty());
    f = all;
    f.email_verified = false;
    f.auth_provider = "google";
    EXPECT_EQ(Ids(list(f)), (std::vector<std::string>{person.customer.id.str()}));

    // Pages of one: has_more until the last, each page after the previous one's last customer.
    CustomerFilter page = all;
    page.limit = 1;
    std::vector<std::string> walked;
    for (;;) {
        CustomerPage p = list(page);
        ASSERT_EQ(p.data.size(), 1u);
        walked.push_back(p.data[0].customer.id.str());
        if (!p.has_more) break;
        page.starting_after = p.data[0].customer.id;
        ASSERT_LT(walked.size(), 4u);
    }
    EXPECT_EQ(walked, Ids(list(all)));
    page.starting_after = CustomerId("cust_missing");
    auto missing = h.billing.ListCustomers(page);
    ASSERT_FALSE(missing.ok());
    EXPECT_EQ(missing.error().code, ErrorCode::kNotFound);
    EXPECT_EQ(missing.error().param, "starting_after");
    page.limit = 0;
    EXPECT_EQ(h.billing.ListCustomers(page).error().param, "limit");
}

TEST_P(OrganizationsTest, UpdateChangesOnlyWhatItGivesAndEmitsPreviousAttributes) {
    Harness h(GetParam());
    CustomerInput a;
    a.company = "Acme";
    a.metadata = MetadataUpdate{false, {{"tier", "gold"}}};
    const CustomerView c = h.Create("user_u", a);
    CustomerInput up;
    up.company = "Acme GmbH";
    up.metadata = MetadataUpdate{false, {{"tier", ""}, {"seats", "5"}}};
    std::optional<CustomerView> after;
    ASSERT_TRUE(h.store->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(after, h.billing.UpdateCustomer(tx, c.customer.id, up, "test"));
        return {};
    }).ok());
    EXPECT_EQ(after->customer.company, "Acme GmbH");
    EXPECT_EQ(after->customer.metadata, (Metadata{{"seats", "5"}}));
    auto events = h.Events("customer.updated");
    ASSERT_EQ(events.size(), 1u);
    auto payload = boost::json::parse(events[0].payload).as_object();
    const auto& prev = payload["data"].as_object()["previous_attributes"].as_object();
    EXPECT_EQ(prev.at("company"), "Acme");
    EXPECT_EQ(prev.at("metadata").as_object().at("tier"), "gold");
    EXPECT_FALSE(prev.contains("email"));

    // The same values again: nothing written, no event.
    ASSERT_TRUE(h.store->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(after, h.billing.UpdateCustomer(tx, c.customer.id, up, "test"));
        return {};
    }).ok());
    EXPECT_EQ(h.Events("customer.updated").size(), 1u);

    // Bad metadata changes nothing.
    CustomerInput bad;
    bad.company = "Changed";
    bad.metadata = MetadataUpdate{false, {{std::string(41, 'k'), "v"}}};
    Status s = h.store->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto v, h.billing.UpdateCustomer(tx, c.customer.id, bad, "test"));
        (void)v;
        return {};
    });
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().param, "metadata[" + std::string(41, 'k') + "]");
    EXPECT_EQ(h.billing.GetCustomer(c.customer.id)->customer.company, "Acme GmbH");
}

TEST_P(OrganizationsTest, MembersAndTheLastOwnerRuleHoldUnderConcurrentWriters) {
    Harness h(GetParam());
    const CustomerId org = h.Organization("org_race").customer.id;
    ASSERT_TRUE(h.Add(org, "owner_1", MemberRole::kOwner).ok());
    ASSERT_TRUE(h.Add(org, "owner_2", MemberRole::kOwner).ok());
    // Two writers remove one owner each at the same time: one wins, the other finds the last owner.
    std::atomic<int> ok{0};
    std::atomic<int> last_owner{0};
    std::vector<std::thread> threads;
    for (const char* user : {"owner_1", "owner_2"}) {
        threads.emplace_back([&, user] {
            auto r = h.Remove(org, user);
            if (r.ok()) ++ok;
            if (!r.ok() && r.error().reason == ErrorReason::kLastOwner) ++last_owner;
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(ok.load(), 1);
    EXPECT_EQ(last_owner.load(), 1);
    auto left = h.members.List(org);
    ASSERT_TRUE(left.ok());
    ASSERT_EQ(left->size(), 1u);
    EXPECT_EQ(left->front().role, MemberRole::kOwner);

    // Eight writers add the same user: exactly one membership.
    threads.clear();
    std::atomic<int> added{0};
    std::atomic<int> exists{0};
    for (int i = 0; i < 8; ++i) {
        threads.emplace_back([&] {
            auto r = h.Add(org, "joiner", MemberRole::kMember);
            if (r.ok()) ++added;
            if (!r.ok() && r.error().reason == ErrorReason::kResourceAlreadyExists) ++exists;
        });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(added.load(), 1);
    EXPECT_EQ(exists.load(), 7);
    EXPECT_EQ(h.Events("customer.member_added").size(), 3u);

    // Rights follow the actor's role: a member adds no one, an admin adds no owner.
    auto by_member = h.Add(org, "x", MemberRole::kMember, MemberRole::kMember);
    EXPECT_EQ(by_member.error().code, ErrorCode::kPermissionDenied);
    auto by_admin = h.Add(org, "x", MemberRole::kOwner, MemberRole::kAdmin);
    EXPECT_EQ(by_admin.error().code, ErrorCode::kPermissionDenied);
    EXPECT_TRUE(h.Add(org, "x", MemberRole::kAdmin, MemberRole::kAdmin).ok());

    // An individual customer has no members table: its user is its external_id, as owner.
    const CustomerId person = h.Create("person_1", CustomerInput{}).customer.id;
    EXPECT_EQ(h.Add(person, "y", MemberRole::kMember).error().reason, ErrorReason::kCustomerNotOrganization);
    EXPECT_EQ(h.members.RoleOf(person, "person_1")->value(), MemberRole::kOwner);
    EXPECT_FALSE(h.members.RoleOf(person, "y")->has_value());
}

TEST_P(OrganizationsTest, EffectiveRoleFollowsThePayingOrganizationAndEmitsPerMember) {
    Harness h(GetParam());
    const CustomerId org = h.Organization("org_pay").customer.id;
    ASSERT_TRUE(h.Add(org, "alice", MemberRole::kOwner).ok());
    ASSERT_TRUE(h.Add(org, "bob", MemberRole::kMember).ok());
    EXPECT_EQ(h.members.GetUser("bob")->effective_role, h.catalog.default_role());
    ASSERT_TRUE(h.billing.SetRoleOverride(org, "professional", "partner", std::nullopt, "test").ok());
    EXPECT_EQ(h.members.GetUser("bob")->effective_role, "professional");
    int user_events = 0;
    for (const auto& e : h.Events("customer.role_changed")) {
        if (e.object_id.starts_with("user:")) ++user_events;
    }
    EXPECT_EQ(user_events, 2);  // alice and bob
    ASSERT_TRUE(h.Remove(org, "bob").ok());
    EXPECT_EQ(h.members.GetUser("bob").error().code, ErrorCode::kNotFound);
}

TEST_P(OrganizationsTest, SessionsAuthenticateUntilTheyExpireOrAreRevoked) {
    Harness h(GetParam());
    const CustomerId org = h.Organization("org_sess").customer.id;
    ASSERT_TRUE(h.Add(org, "carol", MemberRole::kAdmin).ok());
    const auto create = [&](const std::string& user, std::optional<int64_t> seconds) -> Result<CreatedCustomerSession> {
        std::optional<CreatedCustomerSession> out;
        TALLY_TRY(h.store->Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(out, h.members.CreateSession(tx, org, user, seconds, "test"));
            return {};
        }));
        return *out;
    };
    auto s = create("carol", 120);
    ASSERT_TRUE(s.ok()) << s.error().message;
    EXPECT_TRUE(s->token.starts_with(kCustomerSessionTokenPrefix));
    EXPECT_NE(s->record.hash_hex, s->token);  // stored hashed
    auto grant = h.members.Authenticate(s->token);
    ASSERT_TRUE(grant.ok());
    EXPECT_EQ(grant->customer, org);
    EXPECT_EQ(grant->user, "carol");
    h.clock.Advance(119);
    EXPECT_TRUE(h.members.Authenticate(s->token).ok());
    h.clock.Advance(1);
    EXPECT_EQ(h.members.Authenticate(s->token).error().reason, ErrorReason::kCustomerSessionExpired);
    EXPECT_EQ(create("dave", std::nullopt).error().reason, ErrorReason::kUserNotMember);
    EXPECT_EQ(create("carol", 86401).error().param, "expires_in");

    auto t = create("carol", std::nullopt);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(t->record.expires_at.unix_seconds() - t->record.created_at.unix_seconds(), kCustomerSessionSecondsDefault);
    ASSERT_TRUE(h.store->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto revoked, h.members.RevokeSession(tx, t->record.id, "test"));
        (void)revoked;
        return {};
    }).ok());
    EXPECT_EQ(h.members.Authenticate(t->token).error().reason, ErrorReason::kCustomerSessionRevoked);
    EXPECT_EQ(h.members.Authenticate("tcs_unknown").error().code, ErrorCode::kUnauthenticated);

    // Expired sessions are pruned; live ones are kept.
    auto live = create("carol", 3600);
    ASSERT_TRUE(live.ok());
    h.clock.Advance(1);
    std::optional<int> pruned;
    ASSERT_TRUE(h.store->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(pruned, tx.keys().PruneCustomerSessions(h.clock.Now()));
        return {};
    }).ok());
    EXPECT_EQ(*pruned, 1);  // the first one; the revoked one expires later
    EXPECT_TRUE(h.members.Authenticate(live->token).ok());
}

/// A Stripe that is down until told otherwise, and records the profiles it was given.
class FlakyStripe final : public StripeApi {
public:
    std::atomic<bool> down{true};
    std::vector<std::pair<std::string, StripeCustomerProfile>> pushed;
    int calls = 0;
    Result<StripeCustomerId> CreateCustomer(const std::string&, const std::string&, const std::string&,
                                            const std::string&) override {
        return Unavailable("down");
    }
    Result<std::string> FindPriceId(const std::string&) override { return Unavailable("down"); }
    Result<HostedSession> CreateCheckoutSession(const CheckoutSessionRequest&) override { return Unavailable("down"); }
    Result<HostedSession> CreatePortalSession(const StripeCustomerId&, const std::string&) override {
        return Unavailable("down");
    }
    Result<std::vector<std::string>> SyncPlan(const StripePlanSpec&) override { return Unavailable("down"); }
    Result<std::pair<std::string, bool>> EnsurePrice(const StripePriceSpec&) override { return Unavailable("down"); }
    Status UpdateCustomerProfile(const StripeCustomerId& id, const StripeCustomerProfile& profile) override {
        ++calls;
        if (down) return Unavailable("Stripe cannot be reached");
        pushed.emplace_back(id.str(), profile);
        return {};
    }
    Result<Timestamp> SubscriptionNow(const StripeSubscriptionId&, Timestamp) override { return Unavailable("down"); }
    Result<std::string> DefaultPaymentMethod(const StripeCustomerId&) override { return Unavailable("down"); }
    Result<StripeSubscriptionData> CreateSubscription(const StripeSubscriptionCreate&) override {
        return Unavailable("down");
    }
    Result<StripeSubscriptionData> RetrieveSubscription(const StripeSubscriptionId&) override { return Unavailable("down"); }
    Result<StripePaymentData> CreatePaymentIntent(const StripePaymentIntentCreate&) override { return Unavailable("down"); }
    Result<StripePaymentData> RefundPayment(const std::string&, int64_t, const std::string&) override {
        return Unavailable("down");
    }
    Result<StripePaymentData> RetrievePaymentIntent(const std::string&) override { return Unavailable("down"); }
    Result<StripeSubscriptionData> UpdateSubscription(const StripeSubscriptionId&, const StripeSubscriptionUpdate&) override {
        return Unavailable("down");
    }
    Result<StripeSubscriptionData> CancelSubscription(const StripeSubscriptionId&, bool, const std::string&) override {
        return Unavailable("down");
    }
    Result<StripeInvoicePreview> PreviewSubscriptionChange(const StripeSubscriptionId&, const std::string&, int64_t,
                                                           const std::string&) override {
        return Unavailable("down");
    }
    Result<StripeScheduleData> ScheduleSubscriptionChange(const StripeSubscriptionId&, const std::string&,
                                                          const SchedulePhase&, const SchedulePhase&,
                                                          const std::string&) override {
        return Unavailable("down");
    }
    Result<StripeScheduleData> ReleaseSchedule(const std::string&, const std::string&) override {
        return Unavailable("down");
    }
};

TEST_P(OrganizationsTest, ProfileWaitsForStripeAndIsPushedWhenItIsBack) {
    Harness h(GetParam());
    FlakyStripe stripe;
    StripeCustomerSync sync(*h.store, stripe, h.clock);
    CustomerInput in;
    in.company = "Acme";
    const CustomerView c = h.Create("user_sync", in);
    // Linked to a Stripe customer: the profile set before is due for Stripe.
    ASSERT_TRUE(h.store->Write([&](StoreTx& tx) -> Status {
        auto record = *tx.customers().Get(c.customer.id).value();
        return h.billing.LinkStripeCustomer(tx, record, StripeCustomerId("cus_sync"), h.clock.Now(), "test");
    }).ok());
    EXPECT_TRUE(h.billing.GetCustomer(c.customer.id)->customer.stripe_sync_pending);

    // Stripe is down: the update commits anyway, stays pending, and the next rounds wait out a backoff.
    CustomerInput up;
    up.metadata = MetadataUpdate{false, {{"seats", "5"}}};
    ASSERT_TRUE(h.store->Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto v, h.billing.UpdateCustomer(tx, c.customer.id, up, "test"));
        (void)v;
        return {};
    }).ok());
    EXPECT_FALSE(sync.SyncPending().ok());
    EXPECT_EQ(stripe.calls, 1);
    EXPECT_EQ(*sync.SyncPending(), 0);  // inside the backoff: Stripe is not called
    EXPECT_EQ(stripe.calls, 1);
    EXPECT_TRUE(h.billing.GetCustomer(c.customer.id)->customer.stripe_sync_pending);

    // Back: the next round after the backoff pushes the latest profile once and clears the flag.
    stripe.down = false;
    h.clock.Advance(kStripeSyncBackoffMsMin / 1000);
    EXPECT_EQ(*sync.SyncPending(), 1);
    ASSERT_EQ(stripe.pushed.size(), 1u);
    EXPECT_EQ(stripe.pushed[0].first, "cus_sync");
    EXPECT_EQ(stripe.pushed[0].second.metadata,
              (Metadata{{"seats", "5"}, {"external_id", "user_sync"}, {"tally_customer_id", c.customer.id.str()},
                        {"tally_company", "Acme"}}));
    EXPECT_FALSE(h.billing.GetCustomer(c.customer.id)->customer.stripe_sync_pending);
    EXPECT_EQ(*sync.SyncPending(), 0);
    EXPECT_EQ(stripe.pushed.size(), 1u);
}

}  // namespace
}  // namespace tally
