#pragma once
// Plans at runtime (seed 002): the catalog lives in the database, seeded once from the catalog file, changed through
// the admin API or `tally catalog apply`, and pushed to Stripe's products and prices. Prices are immutable, as
// Stripe's: a new amount is a new price that takes the lookup key over (`transfer_lookup_key`), the old price is
// deactivated, and the subscriptions on it keep it until they change plan (grandfathering: they still match their
// plan by the old price's id). A plan is archived, never deleted: it is no longer sold, its subscribers keep it.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "app/billing_service.hpp"
#include "app/ports.hpp"
#include "app/store.hpp"
#include "domain/catalog.hpp"

namespace tally {

class EventOutbox;

constexpr int64_t kPlanSyncClaimSeconds = 60;        // a node's claim on a pending push; a crashed node's lapses
constexpr int64_t kPlanSyncRetrySecondsMax = 300;    // backoff between failed pushes: 1, 2, 4, ... up to this
constexpr int kPlanSyncBatchMax = 20;                // pushes claimed per round
constexpr size_t kPlanIdBytesMax = 64;
constexpr size_t kPlanNameBytesMax = 200;
constexpr size_t kPlanPricesMax = 20;                // active prices per plan

/// A plan's new values; every field left out is kept. |features| and |limits| merge into the plan's (a name new to
/// the catalog is added to every other plan as off / 0). |prices| is the plan's whole set of active prices: a price
/// whose interval and currency match an active one with the same amount keeps it; another amount replaces it (a
/// new price takes its lookup key); an active price left out is deactivated.
struct PlanChange {
    std::optional<std::string> name;
    std::map<std::string, bool> features;
    std::map<std::string, std::optional<int64_t>> limits;  // nullopt: unlimited
    std::optional<int64_t> credits_monthly;
    std::optional<std::vector<CatalogPrice>> prices;  // id, stripe_price_id and active are ignored
};

/// One difference between the catalog file and the database (`tally catalog diff`).
struct PlanDiff {
    std::string plan;
    std::string what;  // "added", "archived", "restored", "name", "role", "features", "limits", "credits_monthly",
                       // "prices"
    std::string from;  // "" for added
    std::string to;
};

/// Thread-safe (state lives in the Store; the installed catalog in BillingService).
class PlanService {
public:
    /// |stripe| may be null (no Stripe configured: pushes stay pending). |outbox| (optional) receives plan.* events.
    PlanService(Store& store, BillingService& billing, StripeApi* stripe, const Clock& clock,
                EventOutbox* outbox = nullptr);

    /// Seeds an empty database from |file| (every plan pending its push) and installs the database's catalog. A
    /// seeded database is left as it is: returns the differences from |file| so the caller can warn about them.
    Result<std::vector<PlanDiff>> SeedAndLoad(const Catalog& file);
    /// Installs the database's catalog when its version moved (another node, `tally catalog apply`); true if it did.
    Result<bool> ReloadIfChanged();

    /// Every plan by rank; archived ones only when |include_archived|.
    Result<std::vector<PlanRecord>> List(bool include_archived);
    /// kNotFound (param "id").
    Result<PlanRecord> Get(const PlanId& id);
    /// Creates |plan| (id: letters, digits, '_', '-'; name, role, prices, features, limits, credits_monthly) as the
    /// highest plan, pending its push, with a plan_created audit entry and a plan.created event. kInvalidArgument
    /// naming the field (the catalog's
    /// rules: domain/catalog.hpp; Catalog's param paths without the "plans[i]." prefix); kConflict
    /// (kResourceAlreadyExists) for an existing id.
    Result<PlanRecord> Create(StoreTx& tx, Plan plan, const std::string& actor);
    /// Applies |change| (plan_updated audit, plan.updated event with previous_attributes). kNotFound; kInvalidArgument
    /// as Create. No difference: the plan unchanged, nothing written.
    Result<PlanRecord> Update(StoreTx& tx, const PlanId& id, const PlanChange& change, const std::string& actor);
    /// Archives the plan (plan_archived audit, plan.archived event); archiving an archived plan returns it. kNotFound;
    /// kInvalidArgument for the default plan.
    Result<PlanRecord> Archive(StoreTx& tx, const PlanId& id, const std::string& actor);
    /// Installs the database's catalog after a committed change and wakes the push (a Notify hook).
    void Changed();

    /// What applying |file| would change.
    Result<std::vector<PlanDiff>> Diff(const Catalog& file);
    /// Makes the database's catalog equal |file| in one transaction: new plans created, changed ones updated (a new
    /// price amount replaces the old price), plans missing from the file archived, archived ones in it restored,
    /// ranks in the file's order. Returns what changed. Roles and the default plan are taken from |file|.
    /// kInvalidArgument for a plan whose role would change (its subscribers' roles derive from it: add a plan).
    Result<std::vector<PlanDiff>> Apply(const Catalog& file, const std::string& actor);

    /// Pushes the plans whose push is due (claimed, so several nodes share the work): each becomes synced with its
    /// Stripe price ids, or stays pending with the error and a later retry. Returns how many were pushed. Cheap to
    /// call often: after a round that found nothing due it skips the store for a few seconds, unless Changed() (or a
    /// version moved by another node) says there is something new.
    Result<int> SyncDue();
    /// Forgets every Stripe price id and marks every plan pending: for a Stripe that starts empty (the built-in
    /// sandbox, a new account), so the next pushes create (or adopt) the prices again.
    Status ResetStripeSync();
    /// When set, called by Changed() (the background worker's wake-up).
    void SetWakeup(std::function<void()> wakeup) { wakeup_ = std::move(wakeup); }

private:
    Status Reload();
    /// Validates |plans| with |settings| as a catalog; the first error's param is made relative to |focus|'s plan.
    Result<Catalog> Validate(const CatalogSettings& settings, const std::vector<PlanRecord>& plans,
                             const std::string& focus) const;
    Status Write(StoreTx& tx, const CatalogSettings& settings, std::vector<PlanRecord>& all, PlanRecord& plan,
                 const char* audit_kind, const char* event_type, const std::string& before, const std::string& actor);
    Result<std::pair<CatalogSettings, std::vector<PlanRecord>>> LoadAll(StoreTx& tx);

    Store& store_;
    BillingService& billing_;
    StripeApi* stripe_;
    const Clock& clock_;
    EventOutbox* outbox_;
    std::function<void()> wakeup_;
    std::atomic<int64_t> installed_version_{-1};
    std::atomic<int64_t> next_sync_check_{0};  // SyncDue skips the store until then (unix seconds); 0: now
};

/// |record| as a domain plan (prices with their ids and active flags; archived when it has archived_at).
Result<Plan> PlanFromRecord(const PlanRecord& record);
/// A one-line summary of |plan| for the audit log and `tally catalog diff`: "name=Pro role=professional ...".
std::string PlanSummary(const PlanRecord& plan);

}  // namespace tally
