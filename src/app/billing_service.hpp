#pragma once
// Customers, role synchronisation and admin overrides.
#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "app/ports.hpp"
#include "app/store.hpp"
#include "domain/catalog.hpp"
#include "domain/membership.hpp"
#include "domain/profile.hpp"
#include "domain/role.hpp"

namespace tally {

/// Named limits and settings of the billing use cases.
struct BillingConfig {
    int64_t grace_period_seconds = int64_t{7} * 86400;  // past_due keeps the role this long after the first failed payment
};

constexpr int kAuditPageSizeMax = 500;
constexpr int kRoleSweepBatchMax = 500;
constexpr size_t kExternalIdBytesMax = 255;
constexpr size_t kEmailBytesMax = 320;
constexpr size_t kNameBytesMax = 255;
constexpr size_t kReasonBytesMax = 1000;

/// A customer with its subscriptions and the access decision at the time of reading.
struct CustomerView {
    CustomerRecord customer;
    std::vector<SubscriptionRecord> subscriptions;
    AccessDecision decision;
    std::optional<SubscriptionRecord> primary;  // the subscription granting the plan, else the newest one
};

/// A customer's fields as the API sets them. nullopt leaves a field as it is (update) or at its default (create:
/// individual, no provider, no company, email not verified, no metadata).
struct CustomerInput {
    std::optional<std::string> email;
    std::optional<std::string> name;
    std::optional<CustomerType> type;  // create only: a customer never changes type
    std::optional<std::string> auth_provider;  // "" clears it on update
    std::optional<std::string> company;
    std::optional<bool> email_verified;
    std::optional<MetadataUpdate> metadata;  // merged as Stripe's: a key set to "" is removed
};

/// One page of a customer list.
struct CustomerPage {
    std::vector<CustomerView> data;
    bool has_more = false;
};

constexpr int kCustomerPageSizeMax = 500;

class EventOutbox;

/// A fresh random id with |prefix|, e.g. "cust_3f9a...". Thread-safe.
std::string NewId(const std::string& prefix);

/// Use cases around customers and their roles. Thread-safe (state lives in the Store).
class BillingService {
public:
    /// |outbox| (optional) receives customer.* events in the transaction of each change.
    BillingService(Store& store, const Catalog& catalog, const Clock& clock, BillingConfig config,
                   EventOutbox* outbox = nullptr);

    /// Creates a customer, or returns the existing one with this external_id (created=false).
    /// kInvalidArgument naming the field for an empty or oversized external_id, email or name.
    Result<std::pair<CustomerView, bool>> CreateCustomer(const std::string& external_id, const std::string& email,
                                                         const std::string& name);
    /// CreateCustomer inside the caller's write transaction |tx| (with an idempotency record, say).
    Result<std::pair<CustomerView, bool>> CreateCustomer(StoreTx& tx, const std::string& external_id,
                                                         const std::string& email, const std::string& name);
    /// CreateCustomer with a profile (|input|): kInvalidArgument naming the field for a bad auth_provider, company or
    /// metadata (Stripe's limits, domain/profile.hpp). An existing external_id returns that customer unchanged.
    Result<std::pair<CustomerView, bool>> CreateCustomer(StoreTx& tx, const std::string& external_id,
                                                         const CustomerInput& input);
    /// Sets the fields |input| gives (POST /v1/customers/{id}), with a customer_updated audit entry and a
    /// customer.updated event whose previous_attributes hold what changed. kNotFound (param "id"); kInvalidArgument
    /// as CreateCustomer, or for |input.type| (param "type": a customer's type is fixed). Nothing changed: no entry.
    Result<CustomerView> UpdateCustomer(StoreTx& tx, const CustomerId& id, const CustomerInput& input,
                                        const std::string& actor);
    /// Customers matching |filter|, newest first; |filter.limit| in 1..kCustomerPageSizeMax. kNotFound (param
    /// "starting_after") when the cursor names no customer.
    Result<CustomerPage> ListCustomers(CustomerFilter filter);
    /// kNotFound if there is no such customer.
    Result<CustomerView> GetCustomer(const CustomerId& id);
    Result<std::vector<CustomerView>> FindByExternalId(const std::string& external_id);
    Result<std::vector<CustomerView>> FindByStripeCustomerId(const StripeCustomerId& id);

    /// Sets an override that beats the automation until |expires_at|. kInvalidArgument for an unknown role,
    /// an empty or blank reason, an expiry not in the future or past kTimestampSecondsMax; kNotFound for an
    /// unknown customer.
    Result<CustomerView> SetRoleOverride(const CustomerId& id, const std::string& role, const std::string& reason,
                                         std::optional<Timestamp> expires_at, const std::string& actor);
    Result<CustomerView> SetRoleOverride(StoreTx& tx, const CustomerId& id, const std::string& role,
                                         const std::string& reason, std::optional<Timestamp> expires_at,
                                         const std::string& actor);
    /// Removes the override; kNotFound if the customer or the override does not exist.
    Result<CustomerView> ClearRoleOverride(const CustomerId& id, const std::string& actor);
    Result<CustomerView> ClearRoleOverride(StoreTx& tx, const CustomerId& id, const std::string& actor);

    /// Audit entries, newest first; |limit| in 1..kAuditPageSizeMax.
    Result<std::vector<AuditEntry>> ListAudit(const CustomerId& customer_id, int limit);

    /// Applies role changes that time alone causes (grace periods ending, overrides expiring).
    /// Returns how many customers were re-evaluated.
    Result<int> SweepRoles();

    /// Recomputes the customer's role and plan inside |tx| and persists them when they (or the next check
    /// time) moved, with a role_changed or plan_changed audit entry carrying |cause|, and the matching events
    /// (customer.role_changed, customer.entitlements_updated, customer.grace_period_started/ended). Writes nothing
    /// else of |customer|: callers that changed other fields persist them themselves.
    Status Reconcile(StoreTx& tx, CustomerRecord& customer, const std::string& cause, Timestamp now);
    /// Attaches a Stripe customer id to the app's customer inside |tx|, folding in a placeholder made from
    /// earlier events; a customer already linked elsewhere is left as is with a link_conflict audit entry.
    Status LinkStripeCustomer(StoreTx& tx, CustomerRecord& customer, const StripeCustomerId& id, Timestamp now,
                              const std::string& cause);
    /// The access decision for |customer| at |now| from what |tx| holds.
    Result<CustomerView> BuildView(StoreTx& tx, CustomerRecord customer, Timestamp now);
    /// When the current dunning run began: the first failed payment after the last successful one.
    static std::optional<Timestamp> PastDueSince(const std::vector<PaymentAttempt>& attempts);

    /// Emits |type| about |customer| with its API object (customer JSON) inside |tx|, if there is an outbox.
    Status EmitCustomerEvent(StoreTx& tx, std::string_view type, const CustomerRecord& customer, Timestamp now,
                             const std::vector<std::pair<std::string, std::variant<std::nullptr_t, bool, int64_t,
                                                                                   std::string, Metadata>>>& previous = {});

    /// The current catalog. Plans change at runtime (PlanService installs each new version); a reference stays valid
    /// for the process's life, so a request that read a plan keeps reading that version.
    const Catalog& catalog() const { return *catalog_.load(std::memory_order_acquire); }
    /// Makes |catalog| the current one. Earlier versions are kept (a plan change costs its catalog's few KB), so no
    /// reader ever holds a dangling plan.
    void InstallCatalog(Catalog catalog);
    EventOutbox* outbox() const { return outbox_; }
    const BillingConfig& config() const { return config_; }

private:
    /// The view of the customer |lookup| finds inside a read transaction: zero or one element.
    Result<std::vector<CustomerView>> FindOne(
        const std::function<Result<std::optional<CustomerRecord>>(StoreTx&)>& lookup);

    Store& store_;
    std::atomic<const Catalog*> catalog_;
    std::mutex catalogs_mu_;
    std::list<Catalog> catalogs_;  // every installed version (std::list: elements never move)
    const Clock& clock_;
    const BillingConfig config_;
    EventOutbox* outbox_;
};

}  // namespace tally
