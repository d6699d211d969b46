#include "app/billing_service.hpp"

#include <algorithm>
#include <mutex>
#include <random>

#include "app/event_outbox.hpp"
#include "app/member_service.hpp"
#include "domain/text.hpp"

namespace tally {

std::string NewId(const std::string& prefix) {
    static std::mutex mu;
    static std::mt19937_64 rng{std::random_device{}()};
    uint64_t a = 0;
    uint64_t b = 0;
    {
        std::lock_guard lock(mu);
        a = rng();
        b = rng();
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out = prefix;
    for (uint64_t v : {a, b}) {
        for (int i = 0; i < 12; ++i) out += kHex[(v >> (i * 4)) & 0xf];
    }
    return out;
}

BillingService::BillingService(Store& store, const Catalog& catalog, const Clock& clock, BillingConfig config,
                               EventOutbox* outbox)
    : store_(store), catalog_(&catalog), clock_(clock), config_(config), outbox_(outbox) {}

void BillingService::InstallCatalog(Catalog catalog) {
    std::lock_guard lock(catalogs_mu_);
    catalogs_.push_back(std::move(catalog));
    catalog_.store(&catalogs_.back(), std::memory_order_release);
}

Status BillingService::EmitCustomerEvent(StoreTx& tx, std::string_view type, const CustomerRecord& customer,
                                         Timestamp now, const ApiObjectRenderer::Attributes& previous) {
    if (!outbox_) return {};
    TALLY_ASSIGN_OR_RETURN(CustomerView view, BuildView(tx, customer, now));
    return outbox_->Emit(tx, type, customer.id.str(), customer.id.str(), outbox_->renderer().Customer(view), previous);
}

std::optional<Timestamp> BillingService::PastDueSince(const std::vector<PaymentAttempt>& attempts) {
    std::optional<Timestamp> last_success;
    for (const auto& a : attempts) {
        if (a.succeeded && (!last_success || a.at > *last_success)) last_success = a.at;
    }
    std::optional<Timestamp> first_failure;
    for (const auto& a : attempts) {
        if (a.succeeded || (last_success && a.at <= *last_success)) continue;
        if (!first_failure || a.at < *first_failure) first_failure = a.at;
    }
    return first_failure;
}

Result<CustomerView> BillingService::BuildView(StoreTx& tx, CustomerRecord customer, Timestamp now) {
    CustomerView view;
    if (customer.stripe_customer_id) {
        TALLY_ASSIGN_OR_RETURN(view.subscriptions, tx.billing().ListSubscriptionsByStripeCustomer(*customer.stripe_customer_id));
    }
    std::vector<SubscriptionAccessInput> inputs;
    inputs.reserve(view.subscriptions.size());
    for (const auto& sub : view.subscriptions) {
        SubscriptionAccessInput in{sub.id.str(), sub.status, catalog().FindPlan(PlanId(sub.plan_id)), std::nullopt};
        if (sub.status == SubscriptionStatus::kPastDue) {
            TALLY_ASSIGN_OR_RETURN(auto attempts, tx.billing().ListPaymentAttempts(sub.id.str()));
            in.past_due_since = PastDueSince(attempts);
            // No recorded failure (its invoice event not seen yet): the grace starts when we learned of past_due.
            if (!in.past_due_since) in.past_due_since = Timestamp(sub.stamp.created);
        }
        inputs.push_back(std::move(in));
    }
    view.decision = DecideAccess(catalog(), inputs, customer.role_override, now, config_.grace_period_seconds);
    for (const auto& sub : view.subscriptions) {
        if (sub.id.str() == view.decision.subscription_id) view.primary = sub;
    }
    if (!view.primary && !view.subscriptions.empty()) {
        view.primary = *std::max_element(view.subscriptions.begin(), view.subscriptions.end(),
                                         [](const auto& a, const auto& b) { return a.created < b.created; });
    }
    view.customer = std::move(customer);
    return view;
}

Status BillingService::Reconcile(StoreTx& tx, CustomerRecord& customer, const std::string& cause, Timestamp now) {
    TALLY_ASSIGN_OR_RETURN(CustomerView view, BuildView(tx, customer, now));
    const AccessDecision& d = view.decision;
    bool changed = false;
    const std::string old_role = customer.role;
    const std::string old_plan = customer.plan_id;
    if (d.role != customer.role) {
        std::string detail = "source=" + d.role_source;
        if (!d.subscription_id.empty()) detail += " subscription=" + d.subscription_id;
        TALLY_TRY(tx.audit().Append({0, customer.id, now, "role_changed", customer.role, d.role, cause, detail}));
        customer.role = d.role;
        changed = true;
    }
    if (d.plan->id.str() != customer.plan_id) {
        TALLY_TRY(tx.audit().Append({0, customer.id, now, "plan_changed", customer.plan_id, d.plan->id.str(), cause,
                                  d.subscription_id.empty() ? "" : "subscription=" + d.subscription_id}));
        customer.plan_id = d.plan->id.str();
        changed = true;
    }
    if (customer.role_check_at != d.next_change_at) {
        customer.role_check_at = d.next_change_at;
        changed = true;
    }
    const std::optional<Timestamp> old_grace = customer.grace_ends_at;
    if (customer.grace_ends_at != d.grace_ends_at) {
        customer.grace_ends_at = d.grace_ends_at;
        changed = true;
    }
    // Most events leave role and plan as they were: then the customer row is not rewritten.
    if (!changed) return {};
    TALLY_TRY(tx.customers().Update(customer));
    if (!outbox_) return {};
    // The events carry the objects as the API now returns them; previous_attributes holds what they replace.
    view.customer = customer;
    const ApiObjectRenderer& render = outbox_->renderer();
    const std::string id = customer.id.str();
    if (old_role != customer.role) {
        TALLY_TRY(outbox_->Emit(tx, "customer.role_changed", id, id, render.Customer(view), {{"role", old_role}}));
        // An organization's role is its members' too: each one whose effective role moved is told (seed 002).
        TALLY_TRY(EmitMemberRoleChanges(tx, catalog(), *outbox_, customer, old_role));
    }
    if (old_plan != customer.plan_id) {
        TALLY_TRY(outbox_->Emit(tx, "customer.entitlements_updated", id, id, render.Entitlements(view),
                                {{"plan", old_plan}}));
    }
    if (old_grace != customer.grace_ends_at) {
        ApiObjectRenderer::Attributes before;
        if (old_grace) {
            before.emplace_back("grace_period_ends_at", old_grace->unix_seconds());
        } else {
            before.emplace_back("grace_period_ends_at", nullptr);
        }
        TALLY_TRY(outbox_->Emit(tx, customer.grace_ends_at ? "customer.grace_period_started" : "customer.grace_period_ended",
                                id, id, render.Customer(view), before));
    }
    return {};
}

namespace {
Status CheckText(const std::string& value, size_t max, const char* field, bool required) {
    if (required && value.empty()) return MissingArgument(std::string(field) + " is required", field);
    if (required && IsBlank(value)) return InvalidArgument(std::string(field) + " must not be blank", field);
    if (value.size() > max) {
        return InvalidArgument(std::string(field) + " must be at most " + std::to_string(max) + " bytes", field);
    }
    return {};
}
}  // namespace

Result<std::pair<CustomerView, bool>> BillingService::CreateCustomer(const std::string& external_id,
                                                                     const std::string& email,
                                                                     const std::string& name) {
    std::optional<std::pair<CustomerView, bool>> out;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, CreateCustomer(tx, external_id, email, name));
        return {};
    }));
    return std::move(*out);
}

Result<std::pair<CustomerView, bool>> BillingService::CreateCustomer(StoreTx& tx, const std::string& external_id,
                                                                     const std::string& email,
                                                                     const std::string& name) {
    CustomerInput input;
    input.email = email;
    input.name = name;
    return CreateCustomer(tx, external_id, input);
}

namespace {
/// The profile fields of |input| checked; |metadata| receives the metadata after the update (from |current|).
Status CheckInput(const CustomerInput& input, const Metadata& current, Metadata& metadata) {
    if (input.email) {
        TALLY_TRY(CheckText(*input.email, kEmailBytesMax, "email", false));
        if (!input.email->empty() && input.email->find('@') == std::string::npos) {
            return InvalidArgument("email is not an address", "email");
        }
    }
    if (input.name) TALLY_TRY(CheckText(*input.name, kNameBytesMax, "name", false));
    if (input.company) TALLY_TRY(CheckText(*input.company, kCompanyBytesMax, "company", false));
    if (input.auth_provider && !input.auth_provider->empty()) TALLY_TRY(ValidateAuthProvider(*input.auth_provider));
    metadata = current;
    if (input.metadata) {
        TALLY_ASSIGN_OR_RETURN(metadata, ApplyMetadata(current, *input.metadata));
    }
    return {};
}

ApiObjectRenderer::Value TextOrNull(const std::string& s) {
    return s.empty() ? ApiObjectRenderer::Value(nullptr) : ApiObjectRenderer::Value(s);
}
}  // namespace

Result<std::pair<CustomerView, bool>> BillingService::CreateCustomer(StoreTx& tx, const std::string& external_id,
                                                                     const CustomerInput& input) {
    TALLY_TRY(CheckText(external_id, kExternalIdBytesMax, "external_id", true));
    Metadata metadata;
    TALLY_TRY(CheckInput(input, {}, metadata));
    const Timestamp now = clock_.Now();
    TALLY_ASSIGN_OR_RETURN(auto existing, tx.customers().FindByExternalId(external_id));
    if (existing) {
        TALLY_ASSIGN_OR_RETURN(auto view, BuildView(tx, *existing, now));
        return std::make_pair(std::move(view), false);
    }
    CustomerRecord c;
    c.id = CustomerId(NewId("cust_"));
    c.external_id = external_id;
    c.email = input.email.value_or("");
    c.name = input.name.value_or("");
    c.type = input.type.value_or(CustomerType::kIndividual);
    c.auth_provider = input.auth_provider.value_or("");
    c.company = input.company.value_or("");
    c.email_verified = input.email_verified.value_or(false);
    c.metadata = std::move(metadata);
    c.role = catalog().default_role();
    c.plan_id = catalog().default_plan().id.str();
    c.created_at = now;
    TALLY_TRY(tx.customers().Insert(c));
    TALLY_TRY(tx.audit().Append({0, c.id, now, "customer_created", "", c.role, "api",
                                 "external_id=" + external_id + " type=" + CustomerTypeName(c.type)}));
    TALLY_ASSIGN_OR_RETURN(auto view, BuildView(tx, c, now));
    if (outbox_) {
        TALLY_TRY(outbox_->Emit(tx, "customer.created", c.id.str(), c.id.str(), outbox_->renderer().Customer(view)));
    }
    return std::make_pair(std::move(view), true);
}

Result<CustomerView> BillingService::UpdateCustomer(StoreTx& tx, const CustomerId& id, const CustomerInput& input,
                                                    const std::string& actor) {
    if (input.type) return InvalidArgument("a customer's type cannot change", "type");
    TALLY_ASSIGN_OR_RETURN(auto record, tx.customers().Get(id));
    if (!record) return NotFound("no such customer: '" + id.str() + "'", "id");
    Metadata metadata;
    TALLY_TRY(CheckInput(input, record->metadata, metadata));
    CustomerRecord c = *record;
    ApiObjectRenderer::Attributes previous;
    std::string changed;
    const auto text = [&](const std::optional<std::string>& to, std::string& field, const char* name) {
        if (!to || *to == field) return;
        previous.emplace_back(name, TextOrNull(field));
        changed += changed.empty() ? name : std::string(",") + name;
        field = *to;
    };
    text(input.email, c.email, "email");
    text(input.name, c.name, "name");
    text(input.auth_provider, c.auth_provider, "auth_provider");
    text(input.company, c.company, "company");
    if (input.email_verified && *input.email_verified != c.email_verified) {
        previous.emplace_back("email_verified", c.email_verified);
        changed += changed.empty() ? "email_verified" : ",email_verified";
        c.email_verified = *input.email_verified;
    }
    if (metadata != c.metadata) {
        previous.emplace_back("metadata", c.metadata);
        changed += changed.empty() ? "metadata" : ",metadata";
        c.metadata = std::move(metadata);
    }
    const Timestamp now = clock_.Now();
    if (!previous.empty()) {
        // Stripe's copy follows after the commit (StripeCustomerSync), so an unreachable Stripe fails nothing here.
        if (c.stripe_customer_id) c.stripe_sync_pending = true;
        TALLY_TRY(tx.customers().Update(c));
        TALLY_TRY(tx.audit().Append({0, c.id, now, "customer_updated", "", "", actor, "fields=" + changed}));
        TALLY_TRY(EmitCustomerEvent(tx, "customer.updated", c, now, previous));
    }
    return BuildView(tx, std::move(c), now);
}

Result<CustomerPage> BillingService::ListCustomers(CustomerFilter filter) {
    if (filter.limit < 1 || filter.limit > kCustomerPageSizeMax) {
        return InvalidArgument("limit must be an integer between 1 and " + std::to_string(kCustomerPageSizeMax),
                               "limit");
    }
    CustomerPage page;
    const int limit = filter.limit;
    filter.limit = limit + 1;  // one more tells whether another page follows
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        if (filter.starting_after) {
            TALLY_ASSIGN_OR_RETURN(auto cursor, tx.customers().Get(*filter.starting_after));
            if (!cursor) return NotFound("no such customer: '" + filter.starting_after->str() + "'", "starting_after");
        }
        TALLY_ASSIGN_OR_RETURN(auto rows, tx.customers().List(filter));
        page.has_more = rows.size() > static_cast<size_t>(limit);
        if (page.has_more) rows.resize(static_cast<size_t>(limit));
        const Timestamp now = clock_.Now();
        for (auto& r : rows) {
            TALLY_ASSIGN_OR_RETURN(auto view, BuildView(tx, std::move(r), now));
            page.data.push_back(std::move(view));
        }
        return {};
    }));
    return page;
}

Result<CustomerView> BillingService::GetCustomer(const CustomerId& id) {
    std::optional<CustomerView> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto record, tx.customers().Get(id));
        if (!record) return NotFound("no such customer: '" + id.str() + "'", "id");
        TALLY_ASSIGN_OR_RETURN(out, BuildView(tx, *record, clock_.Now()));
        return {};
    }));
    return std::move(*out);
}

Result<std::vector<CustomerView>> BillingService::FindOne(
    const std::function<Result<std::optional<CustomerRecord>>(StoreTx&)>& lookup) {
    std::vector<CustomerView> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto record, lookup(tx));
        if (record) {
            TALLY_ASSIGN_OR_RETURN(auto view, BuildView(tx, *record, clock_.Now()));
            out.push_back(std::move(view));
        }
        return {};
    }));
    return out;
}

Result<std::vector<CustomerView>> BillingService::FindByExternalId(const std::string& external_id) {
    return FindOne([&](StoreTx& tx) { return tx.customers().FindByExternalId(external_id); });
}

Result<std::vector<CustomerView>> BillingService::FindByStripeCustomerId(const StripeCustomerId& id) {
    return FindOne([&](StoreTx& tx) { return tx.customers().FindByStripeId(id); });
}

Result<CustomerView> BillingService::SetRoleOverride(const CustomerId& id, const std::string& role,
                                                     const std::string& reason, std::optional<Timestamp> expires_at,
                                                     const std::string& actor) {
    std::optional<CustomerView> out;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, SetRoleOverride(tx, id, role, reason, expires_at, actor));
        return {};
    }));
    return std::move(*out);
}

Result<CustomerView> BillingService::SetRoleOverride(StoreTx& tx, const CustomerId& id, const std::string& role,
                                                     const std::string& reason, std::optional<Timestamp> expires_at,
                                                     const std::string& actor) {
    if (catalog().RoleRank(role) < 0) return InvalidArgument("unknown role '" + role + "'", "role");
    TALLY_TRY(CheckText(reason, kReasonBytesMax, "reason", true));
    const Timestamp now = clock_.Now();
    if (expires_at) TALLY_TRY(CheckTimestampRange(*expires_at, "expires_at"));
    if (expires_at && *expires_at <= now) return InvalidArgument("expires_at must be in the future", "expires_at");
    TALLY_ASSIGN_OR_RETURN(auto record, tx.customers().Get(id));
    if (!record) return NotFound("no such customer: '" + id.str() + "'", "id");
    record->role_override = RoleOverride{role, reason, expires_at, now};
    TALLY_TRY(tx.customers().Update(*record));
    std::string detail = "reason=" + reason;
    if (expires_at) detail += " expires_at=" + FormatRfc3339(*expires_at);
    TALLY_TRY(tx.audit().Append({0, record->id, now, "role_override_set", record->role, role, "admin:" + actor, detail}));
    TALLY_TRY(Reconcile(tx, *record, "admin:" + actor, now));
    return BuildView(tx, *record, now);
}

Result<CustomerView> BillingService::ClearRoleOverride(const CustomerId& id, const std::string& actor) {
    std::optional<CustomerView> out;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(out, ClearRoleOverride(tx, id, actor));
        return {};
    }));
    return std::move(*out);
}

Result<CustomerView> BillingService::ClearRoleOverride(StoreTx& tx, const CustomerId& id, const std::string& actor) {
    const Timestamp now = clock_.Now();
    TALLY_ASSIGN_OR_RETURN(auto record, tx.customers().Get(id));
    if (!record) return NotFound("no such customer: '" + id.str() + "'", "id");
    if (!record->role_override) return NotFound("customer has no role override", "id");
    const std::string old_role = record->role_override->role;
    record->role_override.reset();
    TALLY_TRY(tx.customers().Update(*record));
    TALLY_TRY(tx.audit().Append({0, record->id, now, "role_override_cleared", old_role, "", "admin:" + actor, ""}));
    TALLY_TRY(Reconcile(tx, *record, "admin:" + actor, now));
    return BuildView(tx, *record, now);
}

Result<std::vector<AuditEntry>> BillingService::ListAudit(const CustomerId& customer_id, int limit) {
    if (limit < 1 || limit > kAuditPageSizeMax) {
        return InvalidArgument("limit must be between 1 and " + std::to_string(kAuditPageSizeMax), "limit");
    }
    std::vector<AuditEntry> out;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        if (!customer_id.empty()) {
            TALLY_ASSIGN_OR_RETURN(auto record, tx.customers().Get(customer_id));
            if (!record) return NotFound("no such customer: '" + customer_id.str() + "'", "customer");
        }
        TALLY_ASSIGN_OR_RETURN(out, tx.audit().List(customer_id, limit));
        return {};
    }));
    return out;
}

Result<int> BillingService::SweepRoles() {
    const Timestamp now = clock_.Now();
    // Called on every worker wake-up: look in a read transaction first, so the write lock (which webhook
    // acknowledgements also need) is taken only when some customer is due.
    bool any_due = false;
    TALLY_TRY(store_.Read([&](StoreTx& tx) -> Status {
        TALLY_ASSIGN_OR_RETURN(auto ids, tx.customers().ListDueForRoleCheck(now, 1));
        any_due = !ids.empty();
        return {};
    }));
    if (!any_due) return 0;
    int count = 0;
    TALLY_TRY(store_.Write([&](StoreTx& tx) -> Status {
        // Another node sweeping at the same moment takes other customers (or none) instead of the same ones.
        TALLY_ASSIGN_OR_RETURN(auto ids, tx.customers().ClaimDueForRoleCheck(now, kRoleSweepBatchMax));
        for (const auto& id : ids) {
            TALLY_ASSIGN_OR_RETURN(auto record, tx.customers().Get(id));
            if (!record) continue;
            std::string cause = "time:grace_period_expired";
            if (record->role_override && !record->role_override->ActiveAt(now)) {
                cause = "time:role_override_expired";
                TALLY_TRY(tx.audit().Append({0, record->id, now, "role_override_expired", record->role_override->role,
                                          "", cause, ""}));
                record->role_override.reset();
                TALLY_TRY(tx.customers().Update(*record));
            }
            TALLY_TRY(Reconcile(tx, *record, cause, now));
            ++count;
        }
        return {};
    }));
    return count;
}

Status BillingService::LinkStripeCustomer(StoreTx& tx, CustomerRecord& customer, const StripeCustomerId& id,
                                            Timestamp now, const std::string& cause) {
    if (customer.stripe_customer_id == id) return {};
    if (customer.stripe_customer_id) {
        return tx.audit().Append({0, customer.id, now, "link_conflict", customer.stripe_customer_id->str(), id.str(),
                               cause, "customer is already linked to another Stripe customer; not relinked"});
    }
    TALLY_ASSIGN_OR_RETURN(auto placeholder, tx.customers().FindByStripeId(id));
    if (placeholder) {
        if (!placeholder->external_id.empty()) {
            return tx.audit().Append({0, customer.id, now, "link_conflict", "", id.str(), cause,
                                   "Stripe customer is linked to " + placeholder->id.str()});
        }
        // Fold the placeholder (made from events that came before the link) into the app's customer.
        if (customer.email.empty()) customer.email = placeholder->email;
        if (customer.name.empty()) customer.name = placeholder->name;
        customer.stripe_stamp = placeholder->stripe_stamp;
        customer.stripe_deleted = placeholder->stripe_deleted;
        placeholder->stripe_customer_id.reset();
        placeholder->role_check_at.reset();
        TALLY_TRY(tx.customers().Update(*placeholder));
        TALLY_TRY(tx.audit().Append({0, placeholder->id, now, "customer_merged", placeholder->id.str(),
                                  customer.id.str(), cause, "placeholder folded into the linked customer"}));
    }
    customer.stripe_customer_id = id;
    // A profile set before the Stripe customer existed is pushed to it now (StripeCustomerSync).
    if (!customer.metadata.empty() || !customer.auth_provider.empty() || !customer.company.empty() ||
        customer.email_verified) {
        customer.stripe_sync_pending = true;
    }
    TALLY_TRY(tx.customers().Update(customer));
    TALLY_TRY(tx.audit().Append({0, customer.id, now, "stripe_customer_linked", "", id.str(), cause, ""}));
    return EmitCustomerEvent(tx, "customer.updated", customer, now, {{"stripe_customer_id", nullptr}});
}

}  // namespace tally
