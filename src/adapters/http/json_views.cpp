#include "adapters/http/json_views.hpp"

#include "domain/csv.hpp"
#include "domain/text.hpp"

#include <boost/json.hpp>

namespace tally::http {
namespace bj = boost::json;
namespace {
bj::value OptTs(const std::optional<Timestamp>& t) { return t ? bj::value(t->unix_seconds()) : bj::value(nullptr); }
bj::value OptStr(const std::string& s) { return s.empty() ? bj::value(nullptr) : bj::value(s); }
}  // namespace

namespace {
void SubscriptionFields(bj::object& so, const SubscriptionRecord& s) {
    so["id"] = s.id.str();
    so["status"] = SubscriptionStatusName(s.status);
    so["plan"] = OptStr(s.plan_id);
    so["price"] = OptStr(s.price_id);
    so["lookup_key"] = OptStr(s.price_lookup_key);
    so["interval"] = IntervalUnitName(s.interval.unit);
    so["interval_count"] = s.interval.count;
    so["unit_amount"] = s.unit_amount_minor;
    so["currency"] = OptStr(s.currency);
    so["current_period_start"] = s.current_period_start.unix_seconds();
    so["current_period_end"] = s.current_period_end.unix_seconds();
    so["cancel_at_period_end"] = s.cancel_at_period_end;
    so["trial_end"] = OptTs(s.trial_end);
    so["canceled_at"] = OptTs(s.canceled_at);
    so["pause_collection"] =
        s.pause_collection.empty() ? bj::value(nullptr) : bj::value(bj::object{{"behavior", s.pause_collection}});
    if (s.pending_change) {
        const PendingChange& p = *s.pending_change;
        so["pending_change"] = bj::object{{"plan", OptStr(p.plan_id)},
                                          {"price", OptStr(p.price_id)},
                                          {"quantity", p.quantity},
                                          {"effective_at", p.effective_at.unix_seconds()},
                                          {"schedule", p.schedule_id}};
    } else {
        so["pending_change"] = nullptr;
    }
}
}  // namespace

bj::value SubscriptionJson(const SubscriptionRecord& s, const std::string& customer_id) {
    bj::object o;
    o["id"] = s.id.str();
    o["object"] = "subscription";
    o["customer"] = OptStr(customer_id);
    o["stripe_customer_id"] = s.customer.str();
    SubscriptionFields(o, s);
    o["quantity"] = s.quantity;
    o["created"] = s.created.unix_seconds();
    return o;
}

bj::value InvoiceJson(const InvoiceRecord& i, const std::string& customer_id) {
    return bj::object{{"id", i.id},
                      {"object", "invoice"},
                      {"customer", OptStr(customer_id)},
                      {"stripe_customer_id", i.stripe_customer_id.str()},
                      {"subscription", OptStr(i.subscription_id)},
                      {"number", OptStr(i.number)},
                      {"status", OptStr(i.status)},
                      {"amount_due", i.amount_due_minor},
                      {"amount_paid", i.amount_paid_minor},
                      {"currency", OptStr(i.currency)},
                      {"attempt_count", i.attempt_count},
                      {"next_payment_attempt", OptTs(i.next_payment_attempt)},
                      {"hosted_invoice_url", OptStr(i.hosted_invoice_url)},
                      {"created", i.created.unix_seconds()}};
}

bj::value PaymentJson(const PaymentRecord& p, const std::string& customer_id) {
    return bj::object{{"id", p.id},
                      {"object", "payment"},
                      {"type", p.object},
                      {"customer", OptStr(customer_id)},
                      {"stripe_customer_id", OptStr(p.stripe_customer_id.str())},
                      {"amount", p.amount_minor},
                      {"amount_refunded", p.amount_refunded_minor},
                      {"currency", OptStr(p.currency)},
                      {"status", OptStr(p.status)},
                      {"failure_message", OptStr(p.failure_message)},
                      {"created", p.created.unix_seconds()}};
}

std::string InvoicesCsv(const std::vector<HistoryRow<InvoiceRecord>>& rows) {
    std::string out = CsvRecord({"id", "customer", "stripe_customer_id", "subscription", "number", "status",
                                 "amount_due", "amount_paid", "currency", "attempt_count", "next_payment_attempt",
                                 "hosted_invoice_url", "created"});
    for (const auto& [i, customer] : rows) {
        out += CsvRecord({CsvText(i.id), CsvText(customer), CsvText(i.stripe_customer_id.str()),
                          CsvText(i.subscription_id), CsvText(i.number), CsvText(i.status),
                          std::to_string(i.amount_due_minor), std::to_string(i.amount_paid_minor), CsvText(i.currency),
                          std::to_string(i.attempt_count),
                          i.next_payment_attempt ? std::to_string(i.next_payment_attempt->unix_seconds()) : "",
                          CsvText(i.hosted_invoice_url), std::to_string(i.created.unix_seconds())});
    }
    return out;
}

std::string PaymentsCsv(const std::vector<HistoryRow<PaymentRecord>>& rows) {
    std::string out = CsvRecord({"id", "type", "customer", "stripe_customer_id", "amount", "amount_refunded",
                                 "currency", "status", "failure_message", "created"});
    for (const auto& [p, customer] : rows) {
        out += CsvRecord({CsvText(p.id), CsvText(p.object), CsvText(customer), CsvText(p.stripe_customer_id.str()),
                          std::to_string(p.amount_minor), std::to_string(p.amount_refunded_minor), CsvText(p.currency),
                          CsvText(p.status), CsvText(p.failure_message), std::to_string(p.created.unix_seconds())});
    }
    return out;
}

bj::value WebhookEndpointJson(const WebhookEndpointRecord& e, bool with_secret) {
    bj::array events;
    for (const auto& t : e.enabled_events) events.push_back(bj::value(t));
    bj::object o{{"id", e.id},
                 {"object", "webhook_endpoint"},
                 {"url", e.url},
                 {"description", OptStr(e.description)},
                 {"enabled_events", std::move(events)},
                 {"status", e.disabled ? "disabled" : "enabled"},
                 {"disabled_reason", OptStr(e.disabled_reason)},
                 {"created", e.created_ms / 1000}};
    if (with_secret) o["secret"] = e.secret;
    return o;
}

bj::value DeliveryAttemptJson(const DeliveryAttemptRecord& a) {
    return bj::object{{"id", "wda_" + std::to_string(a.id)},
                      {"object", "webhook_delivery_attempt"},
                      {"delivery", a.delivery_id},
                      {"endpoint", a.endpoint_id},
                      {"event", a.event_id},
                      {"created", a.at_ms / 1000},
                      {"created_ms", a.at_ms},
                      {"status_code", a.status_code == 0 ? bj::value(nullptr) : bj::value(a.status_code)},
                      {"latency_ms", a.latency_ms},
                      {"error", OptStr(a.error)}};
}

std::string JsonObjectRenderer::Customer(const CustomerView& view) const { return bj::serialize(CustomerJson(view)); }
std::string JsonObjectRenderer::Entitlements(const CustomerView& view) const {
    return bj::serialize(EntitlementsJson(view));
}
std::string JsonObjectRenderer::Subscription(const SubscriptionRecord& s, const std::string& customer_id) const {
    return bj::serialize(SubscriptionJson(s, customer_id));
}
std::string JsonObjectRenderer::Invoice(const InvoiceRecord& i, const std::string& customer_id) const {
    return bj::serialize(InvoiceJson(i, customer_id));
}
std::string JsonObjectRenderer::Member(const MemberRecord& m) const { return bj::serialize(MemberJson(m)); }
std::string JsonObjectRenderer::User(const UserView& u) const { return bj::serialize(UserJson(u)); }
std::string JsonObjectRenderer::Plan(const PlanRecord& plan) const { return bj::serialize(PlanJson(plan)); }
std::string JsonObjectRenderer::UsageThreshold(const CustomerId& customer, const MeterState& state, int threshold) const {
    return bj::serialize(UsageThresholdJson(customer, state, threshold));
}
bj::value CreditGrantJson(const CreditGrantRecord& g) {
    return bj::object{{"id", g.id},
                      {"object", "credit_grant"},
                      {"customer", g.customer_id.str()},
                      {"type", GrantTypeName(g.type)},
                      {"amount", g.amount},
                      {"remaining", g.remaining},
                      {"priority", g.priority},
                      {"expires_at", g.expires_at ? bj::value(g.expires_at->unix_seconds()) : bj::value(nullptr)},
                      {"transfer", g.transfer_id},
                      {"reason", g.reason.empty() ? bj::value(nullptr) : bj::value(g.reason)},
                      {"created", g.created.unix_seconds()}};
}
bj::value CreditPurchaseJson(const CreditPurchaseRecord& p) {
    auto text = [](const std::string& v) { return v.empty() ? bj::value(nullptr) : bj::value(v); };
    return bj::object{{"id", p.id},
                      {"object", "credit_purchase"},
                      {"customer", p.customer_id.str()},
                      {"bundle", p.bundle},
                      {"credits", p.credits},
                      {"amount", p.amount},
                      {"currency", p.currency},
                      {"source", p.source},
                      {"status", p.status},
                      {"payment_intent", text(p.payment_intent)},
                      {"checkout_session", text(p.checkout_session)},
                      {"checkout_url", text(p.checkout_url)},
                      {"grant", text(p.grant_id)},
                      {"failure_code", text(p.failure_code)},
                      {"failure_message", text(p.failure_message)},
                      {"amount_refunded", p.amount_refunded},
                      {"credits_refunded", p.credits_refunded},
                      {"credits_refund_spent", p.credits_refund_spent},
                      {"created", p.created.unix_seconds()},
                      {"updated", p.updated.unix_seconds()}};
}
bj::value AutoPurchaseJson(const AutoPurchaseRecord& a, int64_t purchases_this_month,
                           const CreditPurchaseRecord* purchase) {
    bj::object o{{"object", "auto_purchase"},
                 {"customer", a.customer_id.str()},
                 {"enabled", a.enabled},
                 {"paused", a.paused},
                 {"threshold", a.threshold},
                 {"bundle", a.bundle.empty() ? bj::value(nullptr) : bj::value(a.bundle)},
                 {"max_per_month", a.max_per_month},
                 {"purchases_this_month", purchases_this_month},
                 {"failures", a.failures},
                 {"disabled_reason", a.disabled_reason.empty() ? bj::value(nullptr) : bj::value(a.disabled_reason)},
                 {"pending_purchase", a.pending_purchase.empty() ? bj::value(nullptr) : bj::value(a.pending_purchase)},
                 {"next_attempt_at", a.next_attempt_at ? bj::value(a.next_attempt_at->unix_seconds()) : bj::value(nullptr)},
                 {"updated", a.updated.unix_seconds()}};
    if (purchase != nullptr) o["purchase"] = CreditPurchaseJson(*purchase);
    return o;
}
std::string JsonObjectRenderer::AutoPurchase(const AutoPurchaseRecord& settings, int64_t purchases_this_month,
                                             const CreditPurchaseRecord* purchase) const {
    return bj::serialize(AutoPurchaseJson(settings, purchases_this_month, purchase));
}
std::string JsonObjectRenderer::CreditPurchase(const CreditPurchaseRecord& purchase) const {
    return bj::serialize(CreditPurchaseJson(purchase));
}
std::string JsonObjectRenderer::CreditGrant(const CreditGrantRecord& grant) const {
    return bj::serialize(CreditGrantJson(grant));
}
std::string JsonObjectRenderer::CreditThreshold(const CreditThresholdCrossing& c) const {
    return bj::serialize(bj::object{{"object", "credit_threshold"},
                                    {"customer", c.customer.str()},
                                    {"grant", c.grant},
                                    {"threshold", c.threshold},
                                    {"used", c.used},
                                    {"allowance", c.allowance},
                                    {"period_start", c.period.start.unix_seconds()},
                                    {"period_end", c.period.end.unix_seconds()}});
}
std::string JsonObjectRenderer::Envelope(const AppEventRecord& e, std::string_view object_json,
                                         const Attributes& previous) const {
    bj::object data;
    boost::system::error_code ec;
    data["object"] = bj::parse(object_json, ec);
    if (ec) data["object"] = nullptr;
    if (!previous.empty()) {
        bj::object prev;
        for (const auto& [name, value] : previous) {
            std::visit([&, key = name](const auto& v) {
                using T = std::decay_t<decltype(v)>;
                if constexpr (std::is_same_v<T, std::nullptr_t>) {
                    prev[key] = nullptr;
                } else if constexpr (std::is_same_v<T, Metadata>) {
                    bj::object m;
                    for (const auto& [k, val] : v) m[k] = val;
                    prev[key] = std::move(m);
                } else {
                    prev[key] = v;
                }
            }, value);
        }
        data["previous_attributes"] = std::move(prev);
    }
    bj::object o{{"id", e.id},
                 {"object", "event"},
                 {"api_version", "tally.v1"},
                 {"created", e.created_ms / 1000},
                 {"type", e.type},
                 {"livemode", false},
                 {"customer", OptStr(e.customer_id)},
                 {"sequence", e.object_sequence},
                 {"data", std::move(data)}};
    return bj::serialize(o);
}

bj::value CustomerJson(const CustomerView& v) {
    const CustomerRecord& c = v.customer;
    bj::object o;
    o["id"] = c.id.str();
    o["object"] = "customer";
    o["external_id"] = OptStr(c.external_id);
    o["email"] = OptStr(c.email);
    o["name"] = OptStr(c.name);
    o["stripe_customer_id"] = c.stripe_customer_id ? bj::value(c.stripe_customer_id->str()) : bj::value(nullptr);
    o["role"] = v.decision.role;
    o["role_source"] = v.decision.role_source;
    o["plan"] = v.decision.plan->id.str();
    o["grace_period_ends_at"] = OptTs(v.decision.grace_ends_at);
    o["created"] = c.created_at.unix_seconds();
    o["deleted_in_stripe"] = c.stripe_deleted;
    if (v.primary) {
        bj::object so;
        SubscriptionFields(so, *v.primary);
        o["subscription"] = std::move(so);
    } else {
        o["subscription"] = nullptr;
    }
    if (c.role_override) {
        o["role_override"] = bj::object{{"role", c.role_override->role},
                                        {"reason", c.role_override->reason},
                                        {"expires_at", OptTs(c.role_override->expires_at)},
                                        {"created", c.role_override->created_at.unix_seconds()}};
    } else {
        o["role_override"] = nullptr;
    }
    o["subscription_count"] = static_cast<int64_t>(v.subscriptions.size());
    o["type"] = CustomerTypeName(c.type);
    o["auth_provider"] = OptStr(c.auth_provider);
    o["company"] = OptStr(c.company);
    o["email_verified"] = c.email_verified;
    bj::object metadata;
    for (const auto& [k, val] : c.metadata) metadata[k] = val;
    o["metadata"] = std::move(metadata);
    // Whether Stripe's copy of the profile is current: null without a Stripe customer.
    o["stripe_sync"] = !c.stripe_customer_id ? bj::value(nullptr) : bj::value(c.stripe_sync_pending ? "pending" : "synced");
    return o;
}

bj::value EntitlementsJson(const CustomerView& v) {
    const Plan& plan = *v.decision.plan;
    bj::object features;
    for (const auto& [k, on] : plan.features) features[k] = on;
    bj::object limits;
    for (const auto& [k, n] : plan.limits) limits[k] = n ? bj::value(*n) : bj::value(nullptr);  // null: unlimited
    return bj::object{{"object", "entitlements"},
                      {"customer", v.customer.id.str()},
                      {"role", v.decision.role},
                      {"role_source", v.decision.role_source},
                      {"plan", plan.id.str()},
                      {"features", std::move(features)},
                      {"limits", std::move(limits)},
                      {"credits_monthly", plan.credits_monthly},
                      {"grace_period_ends_at", OptTs(v.decision.grace_ends_at)}};
}

bj::value PlanJson(const PlanRecord& plan) {
    bj::array prices;
    for (const auto& p : plan.prices) {
        prices.push_back(bj::object{{"id", p.id},
                                    {"object", "price"},
                                    {"lookup_key", OptStr(p.lookup_key)},
                                    {"interval", p.interval},
                                    {"interval_count", p.interval_count},
                                    {"unit_amount", p.unit_amount},
                                    {"currency", p.currency},
                                    {"stripe_price_id", OptStr(p.stripe_price_id)},
                                    {"active", p.active},
                                    {"created", p.created.unix_seconds()}});
    }
    bj::object features;
    for (const auto& [k, on] : plan.features) features[k] = on;
    bj::object limits;
    for (const auto& [k, n] : plan.limits) limits[k] = n ? bj::value(*n) : bj::value(nullptr);  // null: unlimited
    return bj::object{{"id", plan.id},
                      {"object", "plan"},
                      {"name", plan.name},
                      {"role", plan.role},
                      {"rank", plan.position},
                      {"active", !plan.archived_at.has_value()},
                      {"archived_at", OptTs(plan.archived_at)},
                      {"prices", std::move(prices)},
                      {"features", std::move(features)},
                      {"limits", std::move(limits)},
                      {"credits_monthly", plan.credits_monthly},
                      {"created", plan.created.unix_seconds()},
                      {"updated", plan.updated.unix_seconds()},
                      {"stripe_product_id", "tally_" + plan.id},
                      {"stripe_sync", plan.stripe_sync_pending ? "pending" : "synced"},
                      {"stripe_sync_error", OptStr(plan.stripe_sync_error)}};
}

namespace {
/// floor(100 * current / limit); a limit of 0 is 100% once anything is used; null without a limit.
bj::value PercentJson(int64_t current, const std::optional<int64_t>& limit) {
    if (!limit) return nullptr;
    if (*limit == 0) return current > 0 ? 100 : 0;
    return current * 100 / *limit;
}
}  // namespace

bj::value MeterStateJson(const MeterState& m) {
    const bj::value percent = PercentJson(m.current, m.limit);
    return bj::object{{"meter", m.meter.name},
                      {"kind", MeterKindName(m.meter.kind)},
                      {"mode", LimitModeName(m.meter.mode)},
                      {"unit", m.meter.unit},
                      {"current", m.current},
                      {"limit", m.limit ? bj::value(*m.limit) : bj::value(nullptr)},
                      {"remaining", m.limit ? bj::value(m.remaining) : bj::value(nullptr)},
                      {"percent", percent},
                      {"overage", m.overage},
                      {"period_start", m.period ? bj::value(m.period->start.unix_seconds()) : bj::value(nullptr)},
                      {"resets_at", m.period ? bj::value(m.period->end.unix_seconds()) : bj::value(nullptr)},
                      {"override", m.override_record ? LimitOverrideJson(*m.override_record) : bj::value(nullptr)}};
}

bj::value UsageRecordJson(const UsageEventRecord& r, const Meter* meter) {
    // What the event left: nothing more recorded (amount 0), so the mode does not matter.
    const UsageDecision left = DecideUsage(LimitMode::kHard, r.current, 0, r.limit);
    const int64_t remaining = left.remaining;
    const int64_t overage = left.overage;
    return bj::object{{"object", "usage_record"},
                      {"customer", r.customer_id.str()},
                      {"meter", r.meter},
                      {"kind", meter ? bj::value(MeterKindName(meter->kind)) : bj::value(nullptr)},
                      {"mode", meter ? bj::value(LimitModeName(meter->mode)) : bj::value(nullptr)},
                      {"unit", meter ? bj::value(meter->unit) : bj::value(nullptr)},
                      {"action", r.action},
                      {"value", r.value},
                      {"timestamp", r.at.unix_seconds()},
                      {"idempotency_key", r.idempotency_key.empty() ? bj::value(nullptr) : bj::value(r.idempotency_key)},
                      {"current", r.current},
                      {"limit", r.limit ? bj::value(*r.limit) : bj::value(nullptr)},
                      {"remaining", r.limit ? bj::value(remaining) : bj::value(nullptr)},
                      {"percent", PercentJson(r.current, r.limit)},
                      {"overage", overage},
                      {"period_start", r.period_end ? bj::value(r.period_start.unix_seconds()) : bj::value(nullptr)},
                      {"resets_at", r.period_end ? bj::value(r.period_end->unix_seconds()) : bj::value(nullptr)},
                      {"allowed", true},
                      {"reason", overage > 0 ? bj::value("overage") : bj::value(nullptr)},
                      {"recorded", true}};
}

bj::value LimitOverrideJson(const LimitOverrideRecord& o) {
    return bj::object{{"object", "limit_override"},
                      {"customer", o.customer_id.str()},
                      {"meter", o.meter},
                      {"limit", o.limit ? bj::value(*o.limit) : bj::value(nullptr)},
                      {"extra", o.extra},
                      {"expires_at", OptTs(o.expires_at)},
                      {"reason", o.reason},
                      {"created", o.created.unix_seconds()}};
}

bj::value UsageThresholdJson(const CustomerId& customer, const MeterState& m, int threshold) {
    return bj::object{{"object", "usage_threshold"},
                      {"customer", customer.str()},
                      {"meter", m.meter.name},
                      {"threshold", threshold},
                      {"current", m.current},
                      {"limit", m.limit ? bj::value(*m.limit) : bj::value(nullptr)},
                      {"period_start", m.period ? bj::value(m.period->start.unix_seconds()) : bj::value(nullptr)},
                      {"period_end", m.period ? bj::value(m.period->end.unix_seconds()) : bj::value(nullptr)}};
}

bj::value AuditJson(const AuditEntry& e) {
    return bj::object{{"id", e.id},         {"object", "audit_entry"}, {"customer", e.customer_id.str()},
                      {"created", e.at.unix_seconds()}, {"kind", e.kind},     {"before", OptStr(e.before)},
                      {"after", OptStr(e.after)},        {"cause", e.cause},   {"detail", OptStr(e.detail)}};
}

bj::value InboxJson(const InboxEvent& e) {
    return bj::object{{"id", e.id.str()},
                      {"object", "webhook_event"},
                      {"type", e.type},
                      {"created", e.created.unix_seconds()},
                      {"status", InboxStatusName(e.status)},
                      {"attempts", e.attempts},
                      {"last_error", OptStr(e.last_error)},
                      {"outcome", OptStr(e.outcome)},
                      {"received_at", e.received_at.unix_seconds()},
                      {"next_attempt_at", OptTs(e.next_attempt_at)},
                      {"processed_at", OptTs(e.processed_at)}};
}

bj::value ApiKeyJson(const ApiKeyRecord& key, const std::string& secret) {
    bj::object o{{"id", key.id},
                 {"object", "api_key"},
                 {"name", key.name},
                 {"scope", key.scope},
                 {"created", key.created_at.unix_seconds()},
                 {"last_used_at", OptTs(key.last_used_at)},
                 {"revoked_at", OptTs(key.revoked_at)}};
    if (!secret.empty()) o["secret"] = secret;
    return o;
}

bj::value MemberJson(const MemberRecord& m) {
    return bj::object{{"object", "member"},
                      {"customer", m.customer_id.str()},
                      {"user", m.user_id},
                      {"email", OptStr(m.email)},
                      {"role", MemberRoleName(m.role)},
                      {"created", m.created_at.unix_seconds()},
                      {"updated", m.updated_at.unix_seconds()}};
}

bj::value UserJson(const UserView& u) {
    bj::array memberships;
    for (const auto& m : u.memberships) {
        memberships.push_back(bj::object{{"customer", m.customer.id.str()},
                                         {"type", CustomerTypeName(m.customer.type)},
                                         {"role", MemberRoleName(m.role)},
                                         {"customer_role", m.customer.role},
                                         {"plan", m.customer.plan_id}});
    }
    return bj::object{{"id", u.user_id},
                      {"object", "user"},
                      {"effective_role", u.effective_role},
                      {"memberships", std::move(memberships)}};
}

bj::value CustomerSessionJson(const CustomerSessionRecord& s, const std::string& token) {
    bj::object o{{"id", s.id},
                 {"object", "customer_session"},
                 {"customer", s.customer_id},
                 {"user", s.user_id},
                 {"created", s.created_at.unix_seconds()},
                 {"expires_at", s.expires_at.unix_seconds()},
                 {"revoked_at", OptTs(s.revoked_at)}};
    if (!token.empty()) o["token"] = token;
    return o;
}

std::string ErrorBody(const std::string& type, const std::string& code, const std::string& message,
                      const std::string& param) {
    // Messages and params may quote what the client sent (a path, a query value): JSON text must be UTF-8.
    bj::object err{{"type", type},
                   {"code", code},
                   {"message", SanitizeUtf8(message)},
                   {"param", param.empty() ? bj::value(nullptr) : bj::value(SanitizeUtf8(param))}};
    return bj::serialize(bj::object{{"error", std::move(err)}});
}

}  // namespace tally::http
