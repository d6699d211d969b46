#include "app/plan_service.hpp"

#include <algorithm>
#include <set>
#include <type_traits>

#include "app/event_outbox.hpp"
#include "domain/text.hpp"

namespace tally {
namespace {

Error NoSuchPlan(const std::string& id) { return NotFound("no such plan: '" + id + "'", "id"); }

std::string ProductId(const std::string& plan) { return "tally_" + plan; }

/// "pro_monthly", "pro_yearly", "pro_monthly_eur", "pro_every_3_months": a paid price's lookup key when none is given.
std::string DefaultLookupKey(const std::string& plan, const CatalogPrice& p) {
    std::string key = plan;
    const std::string unit = IntervalUnitName(p.interval.unit);
    if (p.interval.count == 1) {
        key += unit == "day" ? "_daily" : "_" + unit + "ly";
    } else {
        key += "_every_" + std::to_string(p.interval.count) + "_" + unit + "s";
    }
    if (p.unit_amount.currency().code() != "usd") key += "_" + p.unit_amount.currency().code();
    return key;
}

PlanPriceRecord PriceRecord(const CatalogPrice& p, const std::string& id, Timestamp now) {
    return PlanPriceRecord{id,
                           p.lookup_key,
                           IntervalUnitName(p.interval.unit),
                           p.interval.count,
                           p.unit_amount.amount_minor(),
                           p.unit_amount.currency().code(),
                           p.stripe_price_id.value_or(""),
                           true,
                           now};
}

bool SamePriceTerms(const PlanPriceRecord& r, const CatalogPrice& p) {
    return r.interval == IntervalUnitName(p.interval.unit) && r.interval_count == p.interval.count &&
           r.currency == p.unit_amount.currency().code();
}

/// Makes |plan|'s active prices equal |desired| (see PlanChange::prices). True if anything changed.
bool SetPrices(PlanRecord& plan, const std::vector<CatalogPrice>& desired, Timestamp now) {
    bool changed = false;
    std::set<size_t> kept;
    const size_t before = plan.prices.size();
    for (CatalogPrice d : desired) {
        std::optional<size_t> match;
        for (size_t i = 0; i < before; ++i) {
            if (plan.prices[i].active && SamePriceTerms(plan.prices[i], d)) match = i;
        }
        if (d.lookup_key.empty() && d.unit_amount.amount_minor() > 0) {
            d.lookup_key = match ? plan.prices[*match].lookup_key : DefaultLookupKey(plan.id, d);
        }
        if (match && plan.prices[*match].unit_amount == d.unit_amount.amount_minor() &&
            plan.prices[*match].lookup_key == d.lookup_key) {
            kept.insert(*match);
            continue;
        }
        // Immutable, as Stripe's: a new price, which takes the lookup key over; the old one is deactivated.
        if (match) plan.prices[*match].active = false;
        d.stripe_price_id.reset();
        plan.prices.push_back(PriceRecord(d, NewId("tprice_"), now));
        kept.insert(plan.prices.size() - 1);
        changed = true;
    }
    for (size_t i = 0; i < before; ++i) {
        if (plan.prices[i].active && !kept.count(i)) {
            plan.prices[i].active = false;
            changed = true;
        }
    }
    return changed;
}

/// What a push makes Stripe hold of |plan|: a push of one fingerprint leaves another pending.
std::string SyncFingerprint(const PlanRecord& plan) {
    std::string out = plan.name + (plan.archived_at ? "\narchived" : "\nactive");
    for (const auto& p : plan.prices) out += "\n" + p.id + (p.active ? " active" : " inactive");
    return out;
}

bool IsPlanIdChar(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

std::string PricesSummary(const PlanRecord& plan) {
    std::string out;
    for (const auto& p : plan.prices) {
        if (!p.active) continue;
        if (!out.empty()) out += ", ";
        out += (p.lookup_key.empty() ? std::string("-") : p.lookup_key) + ":" + std::to_string(p.unit_amount) + " " +
               p.currency + "/" + (p.interval_count == 1 ? "" : std::to_string(p.interval_count)) + p.interval;
    }
    return "[" + out + "]";
}

template <typename V>
std::string MapSummary(const std::map<std::string, V>& m) {
    std::string out;
    for (const auto& [k, v] : m) {
        if (!out.empty()) out += ",";
        out += k;
        out += "=";
        if constexpr (std::is_same_v<V, bool>) {
            out += v ? "true" : "false";
        } else if constexpr (std::is_same_v<V, std::optional<int64_t>>) {
            out += v ? std::to_string(*v) : std::string("unlimited");
        } else {
            out += std::to_string(v);
        }
    }
    return "{" + out + "}";
}

/// |plan| from the catalog file as a record at |position|.
PlanRecord RecordFromPlan(const Plan& plan, int64_t position, Timestamp now) {
    PlanRecord r;
    r.id = plan.id.str();
    r.position = position;
    r.name = plan.name;
    r.role = plan.role;
    r.credits_monthly = plan.credits_monthly;
    r.features = plan.features;
    r.limits = plan.limits;
    for (const auto& p : plan.prices) {
        CatalogPrice price = p;
        if (price.lookup_key.empty() && price.unit_amount.amount_minor() > 0) {
            price.lookup_key = DefaultLookupKey(r.id, price);
        }
        r.prices.push_back(PriceRecord(price, NewId("tprice_"), now));
    }
    if (plan.archived) r.archived_at = now;
    r.created = now;
    r.updated = now;
    r.stripe_sync_pending = true;
    r.next_sync_at = now;
    return r;
}

/// The differences between the database's |current| (nullptr: absent) and the file's |plan| (nullptr: absent).
std::vector<PlanDiff> DiffPlan(const PlanRecord* current, const Plan* plan) {
    std::vector<PlanDiff> out;
    if (current == nullptr && plan != nullptr) {
        out.push_back({plan->id.str(), "added", "", "name=" + plan->name + " role=" + plan->role});
        return out;
    }
    if (current == nullptr) return out;
    if (plan == nullptr) {
        if (!current->archived_at) out.push_back({current->id, "archived", "active", "archived"});
        return out;
    }
    const std::string& id = current->id;
    if (current->archived_at) out.push_back({id, "restored", "archived", "active"});
    if (current->name != plan->name) out.push_back({id, "name", current->name, plan->name});
    if (current->role != plan->role) out.push_back({id, "role", current->role, plan->role});
    if (current->features != plan->features) {
        out.push_back({id, "features", MapSummary(current->features), MapSummary(plan->features)});
    }
    if (current->limits != plan->limits) out.push_back({id, "limits", MapSummary(current->limits), MapSummary(plan->limits)});
    if (current->credits_monthly != plan->credits_monthly) {
        out.push_back({id, "credits_monthly", std::to_string(current->credits_monthly),
                       std::to_string(plan->credits_monthly)});
    }
    PlanRecord priced = *current;
    if (SetPrices(priced, plan->prices, Timestamp(0))) {
        out.push_back({id, "prices", PricesSummary(*current), PricesSummary(priced)});
    }
    return out;
}

}  // namespace

Result<Plan> PlanFromRecord(const PlanRecord& r) {
    Plan plan;
    plan.id = PlanId(r.id);
    plan.name = r.name;
    plan.role = r.role;
    plan.features = r.features;
    plan.limits = r.limits;
    plan.credits_monthly = r.credits_monthly;
    plan.archived = r.archived_at.has_value();
    for (const auto& p : r.prices) {
        TALLY_ASSIGN_OR_RETURN(auto unit, ParseIntervalUnit(p.interval));
        TALLY_ASSIGN_OR_RETURN(auto currency, Currency::Parse(p.currency));
        CatalogPrice price{BillingInterval{unit, p.interval_count}, Money(p.unit_amount, currency), p.lookup_key,
                           p.stripe_price_id.empty() ? std::nullopt : std::optional<std::string>(p.stripe_price_id), p.id,
                           p.active};
        plan.prices.push_back(std::move(price));
    }
    return plan;
}

std::string PlanSummary(const PlanRecord& p) {
    return "name=" + p.name + " role=" + p.role + " credits_monthly=" + std::to_string(p.credits_monthly) +
           " features=" + MapSummary(p.features) + " limits=" + MapSummary(p.limits) + " prices=" + PricesSummary(p) +
           (p.archived_at ? " archived" : "");
}

PlanService::PlanService(Store& store, BillingService& billing, StripeApi* stripe, const Clock& clock,
                         EventOutbox* outbox)
    : store_(store), billing_(billing), stripe_(stripe), clock_(clock), outbox_(outbox) {}

Result<std::pair<CatalogSettings, std::vector<PlanRecord>>> PlanService::LoadAll(StoreTx& tx) {
    TALLY_ASSIGN_OR_RETURN(auto settings, tx.plans().Settings());
    if (!settings) return Internal("the plan catalog has not been seeded");
    TALLY_ASSIGN_OR_RETURN(auto plans, tx.plans().ListPlans());
    return std::make_pair(std::move(*settings), std::move(plans));
}

Result<Catalog> PlanService::Validate(const CatalogSettings& settings, const std::vector<PlanRecord>& plans,
                                      const std::string& focus) const {
    std::vector<Plan> domain;
    for (const auto& r : plans) {
        TALLY_ASSIGN_OR_RETURN(Plan p, PlanFromRecord(r));
        domain.push_back(std::move(p));
    }
    auto catalog = Catalog::Create(settings.roles, std::move(domain), PlanId(settings.default_plan), settings.meters);
    if (catalog.ok() || focus.empty()) return catalog;
    // "plans[3].prices[0].lookup_key" -> "prices[0].lookup_key" when plan 3 is the one being changed.
    Error e = catalog.error();
    for (size_t i = 0; i < plans.size(); ++i) {
        const std::string prefix = "plans[" + std::to_string(i) + "]";
        if (plans[i].id == focus && e.param.starts_with(prefix)) {
            e.param = e.param.size() > prefix.size() + 1 ? e.param.substr(prefix.size() + 1) : std::string("id");
        }
    }
    return e;
}

Status PlanService::Reload() {
    std::optional<CatalogSettings> settings;
    std::vector<PlanRecord> plans;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(settings, tx.plans().Settings());
        TALLY_ASSIGN_OR_RETURN(plans, tx.plans().ListPlans());
        return {};
    }));
    if (!settings) return Internal("the plan catalog has not been seeded");
    TALLY_ASSIGN_OR_RETURN(Catalog catalog, Validate(*settings, plans, ""));
    billing_.InstallCatalog(std::move(catalog));
    installed_version_ = settings->version;
    return {};
}

Result<std::vector<PlanDiff>> PlanService::SeedAndLoad(const Catalog& file) {
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto settings, tx.plans().Settings());
        if (settings) return {};  // seeded before (by this node or another)
        const Timestamp now = clock_.Now();
        for (size_t i = 0; i < file.plans().size(); ++i) {
            TALLY_TRY(tx.plans().PutPlan(RecordFromPlan(file.plans()[i], static_cast<int64_t>(i), now)));
        }
        TALLY_TRY(tx.plans().PutSettings(
            CatalogSettings{file.roles(), file.default_plan().id.str(), 0, file.declared_meters()}));
        return tx.audit().Append({0, CustomerId(""), now, "catalog_seeded", "",
                                  std::to_string(file.plans().size()) + " plans", "catalog_file", ""});
    }));
    TALLY_TRY(Reload());
    return Diff(file);
}

Result<bool> PlanService::ReloadIfChanged() {
    std::optional<CatalogSettings> settings;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(settings, tx.plans().Settings());
        return {};
    }));
    if (!settings || settings->version == installed_version_.load()) return false;
    TALLY_TRY(Reload());
    next_sync_check_ = 0;  // another node's change may be waiting for its push
    return true;
}

Result<std::vector<PlanRecord>> PlanService::List(bool include_archived) {
    std::vector<PlanRecord> plans;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(plans, tx.plans().ListPlans());
        return {};
    }));
    if (!include_archived) {
        std::erase_if(plans, [](const PlanRecord& p) { return p.archived_at.has_value(); });
    }
    return plans;
}

Result<PlanRecord> PlanService::Get(const PlanId& id) {
    std::optional<PlanRecord> plan;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(plan, tx.plans().GetPlan(id.str()));
        return {};
    }));
    if (!plan) return NoSuchPlan(id.str());
    return std::move(*plan);
}

Status PlanService::Write(StoreTx& tx, const CatalogSettings& settings, std::vector<PlanRecord>& all, PlanRecord& plan,
                          const char* audit_kind, const char* event_type, const std::string& before,
                          const std::string& actor) {
    bool found = false;
    for (auto& p : all) {
        if (p.id == plan.id) {
            p = plan;
            found = true;
        }
    }
    if (!found) all.push_back(plan);
    TALLY_TRY(Validate(settings, all, plan.id));
    TALLY_TRY(tx.plans().PutPlan(plan));
    TALLY_TRY(tx.plans().PutSettings(settings));
    TALLY_TRY(tx.audit().Append({0, CustomerId(""), plan.updated, audit_kind, before, PlanSummary(plan), actor,
                                 "plan=" + plan.id}));
    if (outbox_ == nullptr) return {};
    return outbox_->Emit(tx, event_type, "plan:" + plan.id, "", outbox_->renderer().Plan(plan));
}

Result<PlanRecord> PlanService::Create(StoreTx& tx, Plan plan, const std::string& actor) {
    const std::string id = plan.id.str();
    if (id.empty()) return MissingArgument("id is required", "id");
    // It names the Stripe product (tally_<id>) and sits in URL paths: letters, digits, '_' and '-'.
    if (id.size() > kPlanIdBytesMax || !std::all_of(id.begin(), id.end(), IsPlanIdChar)) {
        return InvalidArgument("id must be 1 to " + std::to_string(kPlanIdBytesMax) +
                                   " letters, digits, '_' or '-'",
                               "id");
    }
    if (plan.name.size() > kPlanNameBytesMax) {
        return InvalidArgument("name must be at most " + std::to_string(kPlanNameBytesMax) + " bytes", "name");
    }
    if (plan.prices.size() > kPlanPricesMax) {
        return InvalidArgument("a plan has at most " + std::to_string(kPlanPricesMax) + " prices", "prices");
    }
    TALLY_ASSIGN_OR_RETURN(auto loaded, LoadAll(tx));
    auto& [settings, all] = loaded;
    for (const auto& p : all) {
        if (p.id == id) {
            return Error{ErrorCode::kConflict, "plan '" + id + "' already exists (archived plans keep their id)", "id",
                         ErrorReason::kResourceAlreadyExists};
        }
    }
    int64_t position = 0;
    for (const auto& p : all) position = std::max(position, p.position + 1);
    // A feature or limit new to the catalog is off (0) on every other plan; one the plan leaves out, off (0) on it.
    std::vector<PlanRecord*> touched;
    for (auto& p : all) {
        bool changed = false;
        for (const auto& [k, _] : plan.features) changed |= p.features.try_emplace(k, false).second;
        for (const auto& [k, _] : plan.limits) changed |= p.limits.try_emplace(k, 0).second;
        for (const auto& [k, _] : p.features) plan.features.try_emplace(k, false);
        for (const auto& [k, _] : p.limits) plan.limits.try_emplace(k, 0);
        if (changed) touched.push_back(&p);
    }
    const Timestamp now = clock_.Now();
    PlanRecord record = RecordFromPlan(plan, position, now);
    record.archived_at.reset();
    for (PlanRecord* p : touched) {
        p->updated = now;
        TALLY_TRY(tx.plans().PutPlan(*p));
    }
    TALLY_TRY(Write(tx, settings, all, record, "plan_created", "plan.created", "", actor));
    return record;
}

Result<PlanRecord> PlanService::Update(StoreTx& tx, const PlanId& id, const PlanChange& change,
                                       const std::string& actor) {
    if (change.name && (change.name->empty() || change.name->size() > kPlanNameBytesMax)) {
        return InvalidArgument("name must be 1 to " + std::to_string(kPlanNameBytesMax) + " bytes", "name");
    }
    if (change.prices && change.prices->size() > kPlanPricesMax) {
        return InvalidArgument("a plan has at most " + std::to_string(kPlanPricesMax) + " prices", "prices");
    }
    TALLY_ASSIGN_OR_RETURN(auto loaded, LoadAll(tx));
    auto& [settings, all] = loaded;
    auto it = std::find_if(all.begin(), all.end(), [&](const PlanRecord& p) { return p.id == id.str(); });
    if (it == all.end()) return NoSuchPlan(id.str());
    PlanRecord plan = *it;
    const std::string before = PlanSummary(plan);
    const Timestamp now = clock_.Now();
    if (change.name) plan.name = *change.name;
    if (change.credits_monthly) plan.credits_monthly = *change.credits_monthly;
    for (const auto& [k, v] : change.features) plan.features[k] = v;
    for (const auto& [k, v] : change.limits) plan.limits[k] = v;
    if (change.prices) SetPrices(plan, *change.prices, now);
    // Names new to the catalog are added to every other plan as off / 0.
    for (auto& p : all) {
        if (p.id == plan.id) continue;
        bool changed = false;
        for (const auto& [k, _] : change.features) changed |= p.features.try_emplace(k, false).second;
        for (const auto& [k, _] : change.limits) changed |= p.limits.try_emplace(k, 0).second;
        if (changed) {
            p.updated = now;
            TALLY_TRY(tx.plans().PutPlan(p));
        }
    }
    if (PlanSummary(plan) == before && [&] {
            for (size_t i = 0; i < plan.prices.size(); ++i) {
                if (i >= it->prices.size() || plan.prices[i].id != it->prices[i].id) return false;
            }
            return plan.prices.size() == it->prices.size();
        }()) {
        return plan;  // nothing to change
    }
    plan.updated = now;
    plan.stripe_sync_pending = true;
    plan.stripe_sync_attempts = 0;
    plan.next_sync_at = now;
    TALLY_TRY(Write(tx, settings, all, plan, "plan_updated", "plan.updated", before, actor));
    return plan;
}

Result<PlanRecord> PlanService::Archive(StoreTx& tx, const PlanId& id, const std::string& actor) {
    TALLY_ASSIGN_OR_RETURN(auto loaded, LoadAll(tx));
    auto& [settings, all] = loaded;
    auto it = std::find_if(all.begin(), all.end(), [&](const PlanRecord& p) { return p.id == id.str(); });
    if (it == all.end()) return NoSuchPlan(id.str());
    if (it->archived_at) return *it;
    if (it->id == settings.default_plan) {
        return InvalidArgument("the default plan cannot be archived: every customer without a subscription has it",
                               "id");
    }
    PlanRecord plan = *it;
    const std::string before = PlanSummary(plan);
    const Timestamp now = clock_.Now();
    plan.archived_at = now;
    plan.updated = now;
    plan.stripe_sync_pending = true;  // the product is deactivated in Stripe
    plan.stripe_sync_attempts = 0;
    plan.next_sync_at = now;
    TALLY_TRY(Write(tx, settings, all, plan, "plan_archived", "plan.archived", before, actor));
    return plan;
}

void PlanService::Changed() {
    (void)Reload();
    next_sync_check_ = 0;
    if (wakeup_) wakeup_();
}

Status PlanService::ResetStripeSync() {
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto loaded, LoadAll(tx));
        for (auto& plan : loaded.second) {
            for (auto& p : plan.prices) p.stripe_price_id.clear();
            plan.stripe_sync_pending = true;
            plan.stripe_sync_error.clear();
            plan.stripe_sync_attempts = 0;
            plan.next_sync_at = Timestamp(0);
            TALLY_TRY(tx.plans().PutPlan(plan));
        }
        TALLY_TRY(tx.plans().PutSettings(loaded.first));
        return {};
    }));
    Changed();
    return {};
}

Result<std::vector<PlanDiff>> PlanService::Diff(const Catalog& file) {
    std::vector<PlanRecord> current;
    std::optional<CatalogSettings> settings;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(current, tx.plans().ListPlans());
        TALLY_ASSIGN_OR_RETURN(settings, tx.plans().Settings());
        return {};
    }));
    std::vector<PlanDiff> out;
    if (settings && settings->meters != file.declared_meters()) {
        auto text = [](const std::vector<Meter>& meters) {
            std::string t = MetersToText(meters);
            std::replace(t.begin(), t.end(), '\n', ';');
            return t;
        };
        out.push_back({"*", "meters", text(settings->meters), text(file.declared_meters())});
    }
    for (const auto& plan : file.plans()) {
        const PlanRecord* in_db = nullptr;
        for (const auto& r : current) in_db = r.id == plan.id.str() ? &r : in_db;
        for (auto& d : DiffPlan(in_db, &plan)) out.push_back(std::move(d));
    }
    for (const auto& r : current) {
        if (file.FindPlan(PlanId(r.id)) == nullptr) {
            for (auto& d : DiffPlan(&r, nullptr)) out.push_back(std::move(d));
        }
    }
    return out;
}

Result<std::vector<PlanDiff>> PlanService::Apply(const Catalog& file, const std::string& actor) {
    std::vector<PlanDiff> changes;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        changes.clear();
        TALLY_ASSIGN_OR_RETURN(auto loaded, LoadAll(tx));
        auto& [settings, all] = loaded;
        const Timestamp now = clock_.Now();
        CatalogSettings next{file.roles(), file.default_plan().id.str(), settings.version, file.declared_meters()};
        std::vector<PlanRecord> result;
        for (size_t i = 0; i < file.plans().size(); ++i) {
            const Plan& plan = file.plans()[i];
            auto it = std::find_if(all.begin(), all.end(), [&](const PlanRecord& r) { return r.id == plan.id.str(); });
            auto diff = DiffPlan(it == all.end() ? nullptr : &*it, &plan);
            PlanRecord record;
            if (it == all.end()) {
                record = RecordFromPlan(plan, static_cast<int64_t>(i), now);
            } else {
                if (it->role != plan.role) {
                    // Subscribers' roles are derived from their plan's: moving it would leave them stale.
                    return InvalidArgument("plan '" + plan.id.str() + "' cannot change its role at runtime (from '" +
                                               it->role + "' to '" + plan.role + "'): add a new plan instead",
                                           "plans[" + std::to_string(i) + "].role");
                }
                record = *it;
                record.name = plan.name;
                record.features = plan.features;
                record.limits = plan.limits;
                record.credits_monthly = plan.credits_monthly;
                record.archived_at.reset();
                SetPrices(record, plan.prices, now);
                if (record.position != static_cast<int64_t>(i)) {
                    record.position = static_cast<int64_t>(i);
                    if (diff.empty()) diff.push_back({record.id, "position", std::to_string(it->position), std::to_string(i)});
                }
                if (!diff.empty()) {
                    record.updated = now;
                    record.stripe_sync_pending = true;
                    record.stripe_sync_attempts = 0;
                    record.next_sync_at = now;
                }
            }
            for (auto& d : diff) changes.push_back(std::move(d));
            result.push_back(std::move(record));
        }
        // Plans the file no longer has are archived, after the file's (their rank stays above none of them).
        int64_t position = static_cast<int64_t>(file.plans().size());
        for (auto& r : all) {
            if (file.FindPlan(PlanId(r.id)) != nullptr) continue;
            PlanRecord record = r;
            record.position = position++;
            if (!record.archived_at) {
                changes.push_back({r.id, "archived", "active", "archived"});
                record.archived_at = now;
                record.updated = now;
                record.stripe_sync_pending = true;
                record.stripe_sync_attempts = 0;
                record.next_sync_at = now;
            }
            result.push_back(std::move(record));
        }
        if (next.meters != settings.meters) {
            changes.push_back({"*", "meters", MetersToText(settings.meters), MetersToText(next.meters)});
        }
        const bool settings_changed = next.roles != settings.roles || next.default_plan != settings.default_plan ||
                                      next.meters != settings.meters;
        if (changes.empty() && !settings_changed) return {};
        TALLY_TRY(Validate(next, result, ""));
        for (const auto& r : result) TALLY_TRY(tx.plans().PutPlan(r));
        TALLY_TRY(tx.plans().PutSettings(next));
        std::vector<std::string> changed_plans;
        for (const auto& d : changes) {
            TALLY_TRY(tx.audit().Append({0, CustomerId(""), now, "plan_" + d.what, d.from, d.to, actor, "plan=" + d.plan}));
            if (std::find(changed_plans.begin(), changed_plans.end(), d.plan) == changed_plans.end()) {
                changed_plans.push_back(d.plan);
            }
        }
        for (const auto& id : changed_plans) {
            if (outbox_ == nullptr) break;
            const auto r = std::find_if(result.begin(), result.end(), [&](const PlanRecord& p) { return p.id == id; });
            if (r == result.end()) continue;  // "*": the catalog's meters, no plan
            const bool added = std::find_if(all.begin(), all.end(), [&](const PlanRecord& p) { return p.id == id; }) == all.end();
            const char* type = added ? "plan.created" : r->archived_at ? "plan.archived" : "plan.updated";
            TALLY_TRY(outbox_->Emit(tx, type, "plan:" + id, "", outbox_->renderer().Plan(*r)));
        }
        return {};
    }));
    Changed();
    return changes;
}

Result<int> PlanService::SyncDue() {
    if (stripe_ == nullptr) return 0;
    const Timestamp now = clock_.Now();
    if (now.unix_seconds() < next_sync_check_.load()) return 0;
    std::vector<std::string> ids;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(ids, tx.plans().ClaimDuePlanSyncs(now, now.PlusSeconds(kPlanSyncClaimSeconds),
                                                                 kPlanSyncBatchMax));
        return {};
    }));
    int pushed = 0;
    for (const auto& id : ids) {
        TALLY_ASSIGN_OR_RETURN(PlanRecord plan, Get(PlanId(id)));
        StripePlanSpec spec{ProductId(plan.id), plan.name, !plan.archived_at.has_value(), {}};
        bool paid = false;
        for (const auto& p : plan.prices) {
            // A price never pushed and no longer active has nothing to do in Stripe.
            if (!p.active && p.stripe_price_id.empty()) continue;
            if (p.unit_amount == 0) continue;  // free plans need no Stripe price
            paid = true;
            spec.prices.push_back(StripePlanPriceSpec{p.id, p.stripe_price_id, p.lookup_key, p.unit_amount, p.currency,
                                                      p.interval, p.interval_count, p.active && !plan.archived_at});
        }
        Result<std::vector<std::string>> result = std::vector<std::string>();
        // A plan Stripe never sold (free, or every price unpushed and inactive) has nothing to push.
        if (paid) result = stripe_->SyncPlan(spec);
        TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
            TALLY_ASSIGN_OR_RETURN(auto current, tx.plans().GetPlan(id));
            if (!current) return {};
            const Timestamp at = clock_.Now();
            if (!result.ok()) {
                current->stripe_sync_error = result.error().message;
                current->stripe_sync_attempts += 1;
                const int64_t shift = std::min<int64_t>(current->stripe_sync_attempts - 1, 16);
                current->next_sync_at = at.PlusSeconds(std::min<int64_t>(int64_t{1} << shift, kPlanSyncRetrySecondsMax));
                return tx.plans().PutPlan(*current);
            }
            for (size_t i = 0; i < spec.prices.size(); ++i) {
                for (auto& p : current->prices) {
                    if (p.id == spec.prices[i].tally_id && !(*result)[i].empty()) p.stripe_price_id = (*result)[i];
                }
            }
            // Changed while it was being pushed: push again (the new version is not in Stripe yet).
            const bool same_version = SyncFingerprint(*current) == SyncFingerprint(plan);
            current->stripe_sync_pending = !same_version;
            current->stripe_sync_error.clear();
            current->stripe_sync_attempts = 0;
            current->next_sync_at = at;
            TALLY_TRY(tx.plans().PutPlan(*current));
            TALLY_ASSIGN_OR_RETURN(auto settings, tx.plans().Settings());
            if (settings) TALLY_TRY(tx.plans().PutSettings(*settings));  // nodes learn the Stripe ids
            return {};
        }));
        if (result.ok()) ++pushed;
    }
    if (!ids.empty()) (void)Reload();
    // Nothing due: look again in a while (a failed push's retry, another node's lapsed claim); Changed() sooner.
    next_sync_check_ = now.unix_seconds() + (ids.empty() ? 5 : 1);
    if (pushed < static_cast<int>(ids.size())) next_sync_check_ = now.unix_seconds() + 1;
    return pushed;
}

}  // namespace tally
