#pragma once
// Billing history (seeds 000/001 `Billing.Payment`, billing history pages): invoices and payments as the webhooks
// stored them, listed newest first, per customer or for the admin, paginated.
#include <optional>
#include <string>
#include <vector>

#include "app/store.hpp"

namespace tally {

constexpr int kBillingHistoryPageSizeMax = 500;

/// What an invoice or payment list asks for. Every set field must match.
struct BillingHistoryQuery {
    std::optional<CustomerId> customer;  // Tally's customer
    std::optional<std::string> status;   // Stripe's status ("paid", "open", ... / "succeeded", "failed", ...)
    std::optional<Timestamp> created_gte;
    std::string starting_after;  // the last id of the previous page
    int limit = 100;             // 1..kBillingHistoryPageSizeMax
};

/// A row with Tally's customer id beside Stripe's ("" when no Tally customer has that Stripe customer).
template <typename Record>
struct HistoryRow {
    Record record;
    std::string customer_id;
};

template <typename Record>
struct HistoryPage {
    std::vector<HistoryRow<Record>> data;
    bool has_more = false;
};

/// Reads only. Thread-safe.
class BillingHistoryService {
public:
    explicit BillingHistoryService(Store& store) : store_(store) {}
    /// kInvalidArgument naming "limit" or "status"; kNotFound naming "customer" for an unknown customer and
    /// "starting_after" for an unknown cursor. A customer without a Stripe customer has an empty history.
    Result<HistoryPage<InvoiceRecord>> ListInvoices(const BillingHistoryQuery& query);
    /// As ListInvoices, for payments (payment intents and charges).
    Result<HistoryPage<PaymentRecord>> ListPayments(const BillingHistoryQuery& query);

private:
    Store& store_;
};

}  // namespace tally
