#include "app/billing_history.hpp"

#include <map>

namespace tally {
namespace {

constexpr size_t kStatusBytesMax = 64;

/// |query| as a store filter inside |tx|; nullopt when the customer has no Stripe customer (an empty history).
Result<std::optional<BillingListFilter>> ToFilter(StoreTx& tx, const BillingHistoryQuery& query) {
    if (query.limit < 1 || query.limit > kBillingHistoryPageSizeMax) {
        return InvalidArgument("limit must be an integer between 1 and " + std::to_string(kBillingHistoryPageSizeMax),
                               "limit");
    }
    if (query.status && (query.status->empty() || query.status->size() > kStatusBytesMax)) {
        return InvalidArgument("status must be a Stripe status (paid, open, failed, ...)", "status");
    }
    BillingListFilter f;
    f.status = query.status;
    f.created_gte = query.created_gte;
    f.limit = query.limit + 1;  // one more tells whether another page follows
    if (!query.starting_after.empty()) f.starting_after = query.starting_after;
    if (query.customer) {
        TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().Get(*query.customer));
        if (!c) return NotFound("no such customer: '" + query.customer->str() + "'", "customer");
        if (!c->stripe_customer_id) return std::optional<BillingListFilter>();
        f.stripe_customer_id = *c->stripe_customer_id;
    }
    return std::optional<BillingListFilter>(std::move(f));
}

/// Fills |page| from |rows| (limit + 1 of them at most), naming each row's Tally customer.
template <typename Record>
Status Fill(StoreTx& tx, std::vector<Record> rows, int limit, HistoryPage<Record>& page) {
    page.has_more = rows.size() > static_cast<size_t>(limit);
    if (page.has_more) rows.resize(static_cast<size_t>(limit));
    std::map<std::string, std::string> tally_ids;  // Stripe customer -> Tally customer, read once per page
    for (auto& r : rows) {
        const std::string stripe_id = r.stripe_customer_id.str();
        auto it = tally_ids.find(stripe_id);
        if (it == tally_ids.end()) {
            TALLY_ASSIGN_OR_RETURN(auto c, tx.customers().FindByStripeId(r.stripe_customer_id));
            it = tally_ids.emplace(stripe_id, c ? c->id.str() : "").first;
        }
        page.data.push_back({std::move(r), it->second});
    }
    return {};
}

template <typename Record, typename Get, typename List>
Result<HistoryPage<Record>> ListHistory(Store& store, const BillingHistoryQuery& query, const char* kind, Get get,
                                        List list) {
    HistoryPage<Record> page;
    TALLY_TRY(store.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto filter, ToFilter(tx, query));
        if (!filter) return {};
        if (filter->starting_after) {
            TALLY_ASSIGN_OR_RETURN(auto cursor, get(tx, *filter->starting_after));
            if (!cursor) {
                return NotFound("no such " + std::string(kind) + ": '" + *filter->starting_after + "'",
                                "starting_after");
            }
        }
        TALLY_ASSIGN_OR_RETURN(auto rows, list(tx, *filter));
        return Fill(tx, std::move(rows), query.limit, page);
    }));
    return page;
}

}  // namespace

Result<HistoryPage<InvoiceRecord>> BillingHistoryService::ListInvoices(const BillingHistoryQuery& query) {
    return ListHistory<InvoiceRecord>(
        store_, query, "invoice", [](StoreTx& tx, const std::string& id) { return tx.billing().GetInvoice(id); },
        [](StoreTx& tx, const BillingListFilter& f) { return tx.billing().ListInvoices(f); });
}

Result<HistoryPage<PaymentRecord>> BillingHistoryService::ListPayments(const BillingHistoryQuery& query) {
    return ListHistory<PaymentRecord>(
        store_, query, "payment", [](StoreTx& tx, const std::string& id) { return tx.billing().GetPayment(id); },
        [](StoreTx& tx, const BillingListFilter& f) { return tx.billing().ListPayments(f); });
}

}  // namespace tally
