// Billing history on both stores: invoices and payments listed by customer, status and creation time, newest
// first, paginated, each named with Tally's customer.
#include "app/billing_history.hpp"

#include <gtest/gtest.h>

#include "test_store.hpp"

namespace tally {
namespace {

using testing::StoreKind;

class BillingHistoryTest : public ::testing::TestWithParam<StoreKind> {};
INSTANTIATE_TEST_SUITE_P(Stores, BillingHistoryTest, testing::kBothStores, testing::StoreKindName);

InvoiceRecord Invoice(const std::string& id, const std::string& customer, const std::string& status, int64_t created) {
    InvoiceRecord r{id, StripeCustomerId(customer), "sub_1", status, 1000, status == "paid" ? 1000 : 0, "eur",
                    EventStamp{created, 1, "evt_" + id, false}};
    r.created = Timestamp(created);
    r.attempt_count = status == "paid" ? 1 : 3;
    if (status == "open") r.next_payment_attempt = Timestamp(created + 86400);
    r.hosted_invoice_url = "https://invoice.stripe.com/i/" + id;
    r.number = "N-" + id;
    return r;
}

std::vector<std::string> Ids(const HistoryPage<InvoiceRecord>& page) {
    std::vector<std::string> out;
    for (const auto& r : page.data) out.push_back(r.record.id);
    return out;
}

TEST_P(BillingHistoryTest, ListsFilterPageAndNameTheCustomer) {
    testing::TestStore db(GetParam());
    auto store = db.Open();
    ASSERT_TRUE(store);
    CustomerRecord c;
    c.id = CustomerId("cust_h");
    c.external_id = "user_h";
    c.stripe_customer_id = StripeCustomerId("cus_h");
    c.role = "member";
    c.plan_id = "free";
    CustomerRecord bare = c;
    bare.id = CustomerId("cust_bare");
    bare.external_id = "user_bare";
    bare.stripe_customer_id.reset();
    ASSERT_TRUE(store->Write([&](StoreTx& tx) -> Status {
        TALLY_TRY(tx.customers().Insert(c));
        TALLY_TRY(tx.customers().Insert(bare));
        TALLY_TRY(tx.billing().UpsertInvoice(Invoice("in_1", "cus_h", "paid", 100)));
        TALLY_TRY(tx.billing().UpsertInvoice(Invoice("in_2", "cus_h", "open", 200)));
        TALLY_TRY(tx.billing().UpsertInvoice(Invoice("in_3", "cus_other", "paid", 200)));  // same second as in_2
        PaymentRecord p{"pi_1", "payment_intent", StripeCustomerId("cus_h"), 1000, 0, "eur", "requires_payment_method",
                        EventStamp{150, 1, "evt_p", false}};
        p.created = Timestamp(150);
        p.failure_message = "Your card was declined.";
        return tx.billing().UpsertPayment(p);
    }).ok());
    BillingHistoryService history(*store);

    BillingHistoryQuery q;
    auto all = history.ListInvoices(q);
    ASSERT_TRUE(all.ok()) << all.error().message;
    EXPECT_EQ(Ids(*all), (std::vector<std::string>{"in_3", "in_2", "in_1"}));  // created, then id, descending
    EXPECT_EQ(all->data[1].customer_id, "cust_h");
    EXPECT_EQ(all->data[0].customer_id, "");  // no Tally customer has cus_other
    const InvoiceRecord& open = all->data[1].record;
    EXPECT_EQ(open.attempt_count, 3);
    EXPECT_EQ(open.next_payment_attempt->unix_seconds(), 86600);
    EXPECT_EQ(open.hosted_invoice_url, "https://invoice.stripe.com/i/in_2");
    EXPECT_EQ(open.number, "N-in_2");
    EXPECT_FALSE(all->data[0].record.next_payment_attempt.has_value());

    q.customer = CustomerId("cust_h");
    EXPECT_EQ(Ids(*history.ListInvoices(q)), (std::vector<std::string>{"in_2", "in_1"}));
    q.status = "paid";
    EXPECT_EQ(Ids(*history.ListInvoices(q)), (std::vector<std::string>{"in_1"}));
    q = {};
    q.created_gte = Timestamp(200);
    EXPECT_EQ(Ids(*history.ListInvoices(q)), (std::vector<std::string>{"in_3", "in_2"}));

    // Pages of one through a same-second tie.
    q = {};
    q.limit = 1;
    std::vector<std::string> walked;
    for (int i = 0; i < 5; ++i) {
        auto page = history.ListInvoices(q);
        ASSERT_TRUE(page.ok());
        ASSERT_EQ(page->data.size(), 1u);
        walked.push_back(page->data[0].record.id);
        if (!page->has_more) break;
        q.starting_after = page->data[0].record.id;
    }
    EXPECT_EQ(walked, (std::vector<std::string>{"in_3", "in_2", "in_1"}));

    // Payments, with why they failed.
    BillingHistoryQuery pq;
    pq.status = "requires_payment_method";
    auto payments = history.ListPayments(pq);
    ASSERT_TRUE(payments.ok());
    ASSERT_EQ(payments->data.size(), 1u);
    EXPECT_EQ(payments->data[0].record.failure_message, "Your card was declined.");
    EXPECT_EQ(payments->data[0].customer_id, "cust_h");

    // A customer without a Stripe customer has no history; unknown customers and cursors are errors.
    BillingHistoryQuery none;
    none.customer = CustomerId("cust_bare");
    EXPECT_TRUE(history.ListInvoices(none)->data.empty());
    none.customer = CustomerId("cust_missing");
    EXPECT_EQ(history.ListInvoices(none).error().param, "customer");
    BillingHistoryQuery cursor;
    cursor.starting_after = "in_missing";
    EXPECT_EQ(history.ListInvoices(cursor).error().param, "starting_after");
    BillingHistoryQuery bad;
    bad.limit = 501;
    EXPECT_EQ(history.ListPayments(bad).error().param, "limit");
}

}  // namespace
}  // namespace tally
