#include "adapters/stripe/stripe_api.hpp"

#include "adapters/stripe/event_decoder.hpp"

namespace tally::stripe {
namespace bj = boost::json;

namespace {

std::string StringField(const bj::value& body, const char* key) {
    const auto* v = body.is_object() ? body.get_object().if_contains(key) : nullptr;
    return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

Result<HostedSession> Session(const Result<Response>& r) {
    if (!r.ok()) return r.error();
    HostedSession s{StringField(r->body, "id"), StringField(r->body, "url")};
    if (s.id.empty() || s.url.empty()) return Unavailable("Stripe returned a session without id or url");
    return s;
}

/// A subscription in Stripe's answer, decoded as webhooks' are.
Result<StripeSubscriptionData> SubscriptionOf(const Response& r) {
    if (!r.body.is_object()) return Unavailable("Stripe answered with no subscription object");
    auto decoded = DecodeStripeSubscription(r.body.get_object());
    if (!decoded.ok()) return Unavailable("Stripe answered with a subscription Tally cannot read: " + decoded.error().message);
    return decoded;
}

/// A subscription schedule in Stripe's answer, decoded as webhooks' are.
Result<StripeScheduleData> ScheduleOf(const Response& r) {
    if (!r.body.is_object()) return Unavailable("Stripe answered with no subscription schedule object");
    auto decoded = DecodeStripeSchedule(r.body.get_object());
    if (!decoded.ok()) return Unavailable("Stripe answered with a schedule Tally cannot read: " + decoded.error().message);
    return decoded;
}

bj::object PhaseParams(const SchedulePhase& p, bool dated) {
    bj::object o{{"items", bj::array{bj::object{{"price", p.price_id}, {"quantity", std::to_string(p.quantity)}}}},
                 {"proration_behavior", "none"}};
    if (dated) {
        o["start_date"] = std::to_string(p.start.unix_seconds());
        o["end_date"] = std::to_string(p.end.unix_seconds());
    } else {
        o["iterations"] = "1";
    }
    return o;
}

int64_t IntField(const bj::object& o, const char* key) {
    const auto* v = o.if_contains(key);
    return v && v->is_int64() ? v->get_int64() : 0;
}

}  // namespace

Result<Timestamp> HttpStripeApi::SubscriptionNow(const StripeSubscriptionId& id, Timestamp wall_now) {
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Get("/v1/subscriptions/" + id.str()));
    const std::string clock = StringField(r.body, "test_clock");
    if (clock.empty()) return wall_now;
    TALLY_ASSIGN_OR_RETURN(Response c, client_.Get("/v1/test_helpers/test_clocks/" + clock));
    const auto* o = c.body.if_object();
    const int64_t frozen = o ? IntField(*o, "frozen_time") : 0;
    if (frozen <= 0) return Unavailable("Stripe answered test clock " + clock + " without a frozen_time");
    return Timestamp(frozen);
}

Result<std::string> HttpStripeApi::DefaultPaymentMethod(const StripeCustomerId& id) {
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Get("/v1/customers/" + id.str()));
    const auto* o = r.body.if_object();
    const auto* settings = o ? o->if_contains("invoice_settings") : nullptr;
    if (settings == nullptr || !settings->is_object()) return std::string();
    // default_payment_method is an id, or an object when expanded.
    const auto* pm = settings->get_object().if_contains("default_payment_method");
    if (pm && pm->is_object()) return StringField(*pm, "id");
    return pm && pm->is_string() ? std::string(pm->get_string()) : std::string();
}

Result<StripePaymentData> HttpStripeApi::RetrievePaymentIntent(const std::string& id) {
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Get("/v1/payment_intents/" + id));
    if (!r.body.is_object()) return Unavailable("Stripe answered with no PaymentIntent object");
    auto decoded = DecodeStripePaymentIntent(r.body.get_object());
    if (!decoded.ok()) return Unavailable("Stripe answered with a PaymentIntent Tally cannot read: " + decoded.error().message);
    return decoded;
}

Result<StripePaymentData> HttpStripeApi::RefundPayment(const std::string& payment_intent, int64_t amount_minor,
                                                       const std::string& idempotency_key) {
    bj::object params{{"payment_intent", payment_intent}};
    if (amount_minor > 0) params["amount"] = std::to_string(amount_minor);
    TALLY_ASSIGN_OR_RETURN(Response refund, client_.Post("/v1/refunds", params, idempotency_key));
    const std::string charge = StringField(refund.body, "charge");
    if (charge.empty()) return Unavailable("Stripe answered with a refund without its charge");
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Get("/v1/charges/" + charge));
    if (!r.body.is_object()) return Unavailable("Stripe answered with no charge object");
    auto decoded = DecodeStripeCharge(r.body.get_object());
    if (!decoded.ok()) return Unavailable("Stripe answered with a charge Tally cannot read: " + decoded.error().message);
    return decoded;
}

Result<std::string> HttpStripeApi::OffSessionPaymentMethod(const StripeCustomerId& id) {
    TALLY_ASSIGN_OR_RETURN(std::string pm, DefaultPaymentMethod(id));
    if (!pm.empty()) return pm;
    // Stripe lists a customer's payment methods newest first.
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Get("/v1/customers/" + id.str() + "/payment_methods",
                                                     bj::object{{"type", "card"}, {"limit", "1"}}));
    const auto* o = r.body.if_object();
    const auto* data = o ? o->if_contains("data") : nullptr;
    if (data == nullptr || !data->is_array() || data->get_array().empty()) return std::string();
    return StringField(data->get_array()[0], "id");
}

Result<StripeSubscriptionData> HttpStripeApi::CreateSubscription(const StripeSubscriptionCreate& request) {
    bj::object metadata;
    for (const auto& [k, v] : request.metadata) metadata[k] = v;
    bj::object params{{"customer", request.customer.str()},
                      {"items", bj::array{bj::object{{"price", request.price_id}}}},
                      {"metadata", std::move(metadata)},
                      // A first payment that fails creates nothing (Stripe answers 402), instead of an incomplete
                      // subscription the customer would have to finish elsewhere.
                      {"payment_behavior", "error_if_incomplete"}};
    if (request.trial_period_days) {
        params["trial_period_days"] = std::to_string(*request.trial_period_days);
        params["trial_settings"] =
            bj::object{{"end_behavior", bj::object{{"missing_payment_method", request.trial_missing_payment_method}}}};
    }
    if (!request.default_payment_method.empty()) params["default_payment_method"] = request.default_payment_method;
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Post("/v1/subscriptions", params, request.idempotency_key));
    return SubscriptionOf(r);
}

Result<std::string> HttpStripeApi::SubscriptionItemId(const StripeSubscriptionId& id) {
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Get("/v1/subscriptions/" + id.str()));
    const auto* o = r.body.if_object();
    const auto* items = o ? o->if_contains("items") : nullptr;
    const auto* data = items && items->is_object() ? items->get_object().if_contains("data") : nullptr;
    if (data == nullptr || !data->is_array() || data->get_array().size() != 1) {
        return InvalidArgument("subscription " + id.str() + " does not have exactly one item: Tally changes single-price "
                               "subscriptions only", "subscription");
    }
    std::string item = StringField(data->get_array()[0], "id");
    if (item.empty()) return Unavailable("Stripe answered with a subscription item without an id");
    return item;
}

Result<StripeSubscriptionData> HttpStripeApi::RetrieveSubscription(const StripeSubscriptionId& id) {
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Get("/v1/subscriptions/" + id.str()));
    return SubscriptionOf(r);
}

Result<StripeSubscriptionData> HttpStripeApi::UpdateSubscription(const StripeSubscriptionId& id,
                                                                 const StripeSubscriptionUpdate& update) {
    bj::object params;
    if (update.cancel_at_period_end) params["cancel_at_period_end"] = *update.cancel_at_period_end ? "true" : "false";
    if (!update.price_id.empty()) {
        TALLY_ASSIGN_OR_RETURN(std::string item, SubscriptionItemId(id));
        params["items"] = bj::array{bj::object{{"id", item}, {"price", update.price_id}}};
        // The change is paid now or not at all: a declined card leaves the subscription on its old price.
        params["payment_behavior"] = "error_if_incomplete";
    }
    if (update.proration_date) params["proration_date"] = std::to_string(*update.proration_date);
    if (!update.proration_behavior.empty()) params["proration_behavior"] = update.proration_behavior;
    if (update.pause_collection) {
        if (update.pause_collection->empty()) {
            params["pause_collection"] = "";  // Stripe's way to clear it
        } else {
            params["pause_collection"] = bj::object{{"behavior", *update.pause_collection}};
        }
    }
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Post("/v1/subscriptions/" + id.str(), params, update.idempotency_key));
    return SubscriptionOf(r);
}

Result<StripeSubscriptionData> HttpStripeApi::CancelSubscription(const StripeSubscriptionId& id, bool prorate,
                                                                 const std::string& idempotency_key) {
    (void)idempotency_key;  // a DELETE is idempotent by itself: a repeat finds the subscription canceled
    const std::string path = "/v1/subscriptions/" + id.str();
    auto r = client_.Delete(path, prorate ? bj::object{{"prorate", "true"}} : bj::object{});
    if (!r.ok()) {
        if (r.error().code != ErrorCode::kInvalidArgument) return r.error();
        // Already canceled (a retry after the first DELETE landed): the subscription as it is now.
        TALLY_ASSIGN_OR_RETURN(Response current, client_.Get(path));
        TALLY_ASSIGN_OR_RETURN(auto s, SubscriptionOf(current));
        if (s.status != SubscriptionStatus::kCanceled) return r.error();
        return s;
    }
    return SubscriptionOf(*r);
}

Result<StripeScheduleData> HttpStripeApi::ScheduleSubscriptionChange(const StripeSubscriptionId& id,
                                                                    const std::string& schedule_id,
                                                                    const SchedulePhase& current,
                                                                    const SchedulePhase& next,
                                                                    const std::string& idempotency_key) {
    // One caller key, two Stripe requests: each gets its own derived key ("" lets the client make one per call).
    const auto key = [&](const char* step) { return idempotency_key.empty() ? std::string() : idempotency_key + step; };
    std::string schedule = schedule_id;
    if (schedule.empty()) {
        TALLY_ASSIGN_OR_RETURN(Response created, client_.Post("/v1/subscription_schedules",
                                                               bj::object{{"from_subscription", id.str()}},
                                                               key("_schedule")));
        schedule = StringField(created.body, "id");
        if (schedule.empty()) return Unavailable("Stripe answered a schedule creation without an id");
    }
    // The current phase as it is (dated), then one period of the new price; end_behavior release lets the
    // subscription go on in it. No proration: the change falls on the period boundary.
    bj::object params{{"phases", bj::array{PhaseParams(current, true), PhaseParams(next, false)}},
                      {"end_behavior", "release"},
                      {"proration_behavior", "none"}};
    auto r = client_.Post("/v1/subscription_schedules/" + schedule, params, key("_phases"));
    if (!r.ok()) {
        // A schedule Tally just made but could not give its phases would keep the subscription managed by it
        // (Stripe then refuses cancel_at_period_end): let it go, best effort, and report the first error.
        if (schedule_id.empty()) (void)client_.Post("/v1/subscription_schedules/" + schedule + "/release", bj::object{}, "");
        return r.error();
    }
    return ScheduleOf(*r);
}

Result<StripeScheduleData> HttpStripeApi::ReleaseSchedule(const std::string& id, const std::string& idempotency_key) {
    const std::string path = "/v1/subscription_schedules/" + id;
    auto r = client_.Post(path + "/release", bj::object{}, idempotency_key);
    if (!r.ok()) {
        if (r.error().code != ErrorCode::kInvalidArgument) return r.error();
        // Already released, completed or canceled (by a retry, the clock or someone else): the schedule as it is.
        TALLY_ASSIGN_OR_RETURN(Response current, client_.Get(path));
        TALLY_ASSIGN_OR_RETURN(auto schedule, ScheduleOf(current));
        if (IsOpenScheduleStatus(schedule.status)) return r.error();
        return schedule;
    }
    return ScheduleOf(*r);
}

Result<StripeInvoicePreview> HttpStripeApi::PreviewSubscriptionChange(const StripeSubscriptionId& id,
                                                                      const std::string& price_id,
                                                                      int64_t proration_date,
                                                                      const std::string& proration_behavior) {
    TALLY_ASSIGN_OR_RETURN(std::string item, SubscriptionItemId(id));
    bj::object details{{"items", bj::array{bj::object{{"id", item}, {"price", price_id}}}},
                       {"proration_date", std::to_string(proration_date)}};
    if (!proration_behavior.empty()) details["proration_behavior"] = proration_behavior;
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Post("/v1/invoices/create_preview",
                                                    bj::object{{"subscription", id.str()},
                                                               {"subscription_details", std::move(details)}}));
    const auto* o = r.body.if_object();
    if (o == nullptr) return Unavailable("Stripe answered create_preview with no invoice");
    StripeInvoicePreview out;
    out.currency = StringField(r.body, "currency");
    out.total_minor = IntField(*o, "total");
    out.amount_due_minor = IntField(*o, "amount_due");
    const auto* lines = o->if_contains("lines");
    const auto* data = lines && lines->is_object() ? lines->get_object().if_contains("data") : nullptr;
    if (data && data->is_array()) {
        for (const auto& v : data->get_array()) {
            if (!v.is_object()) continue;
            const bj::object& l = v.get_object();
            StripeInvoiceLine line;
            line.description = StringField(v, "description");
            line.amount_minor = IntField(l, "amount");
            // Older API versions flag `proration` on the line; current ones under parent.*_details.proration.
            if (const auto* p = l.if_contains("proration"); p && p->is_bool()) line.proration = p->get_bool();
            if (const auto* parent = l.if_contains("parent"); parent && parent->is_object()) {
                for (const auto& kv : parent->get_object()) {
                    if (!kv.value().is_object()) continue;
                    if (const auto* p = kv.value().get_object().if_contains("proration"); p && p->is_bool()) {
                        line.proration = line.proration || p->get_bool();
                    }
                }
            }
            if (const auto* period = l.if_contains("period"); period && period->is_object()) {
                line.period_start = Timestamp(IntField(period->get_object(), "start"));
                line.period_end = Timestamp(IntField(period->get_object(), "end"));
            }
            out.lines.push_back(std::move(line));
        }
    }
    return out;
}

Result<StripeCustomerId> HttpStripeApi::CreateCustomer(const std::string& email, const std::string& name,
                                                       const std::string& external_id,
                                                       const std::string& idempotency_key) {
    bj::object params{{"metadata", bj::object{{"external_id", external_id}}}};
    if (!email.empty()) params["email"] = email;
    if (!name.empty()) params["name"] = name;
    {
        std::lock_guard lock(mu_);
        if (!test_clock_.empty()) params["test_clock"] = test_clock_;
    }
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Post("/v1/customers", params, idempotency_key));
    const std::string id = StringField(r.body, "id");
    if (id.empty()) return Unavailable("Stripe returned a customer without an id");
    return StripeCustomerId(id);
}

Status HttpStripeApi::UpdateCustomerProfile(const StripeCustomerId& id, const StripeCustomerProfile& profile) {
    // Stripe merges metadata on update: read what it holds, then send the difference ("" removes a key).
    const std::string path = "/v1/customers/" + id.str();
    TALLY_ASSIGN_OR_RETURN(Response current, client_.Get(path));
    Metadata stripe_metadata;
    std::string email;
    std::string name;
    if (const auto* o = current.body.if_object()) {
        if (const auto* m = o->if_contains("metadata"); m != nullptr && m->is_object()) {
            for (const auto& kv : m->get_object()) {
                if (kv.value().is_string()) stripe_metadata[std::string(kv.key())] = std::string(kv.value().get_string());
            }
        }
        email = StringField(current.body, "email");
        name = StringField(current.body, "name");
    }
    const auto patch = MetadataPatch(stripe_metadata, profile.metadata);
    if (patch.empty() && email == profile.email && name == profile.name) return {};
    bj::object params;
    if (email != profile.email) params["email"] = profile.email;
    if (name != profile.name) params["name"] = profile.name;
    if (!patch.empty()) {
        bj::object metadata;
        for (const auto& [k, v] : patch) metadata[k] = v;
        params["metadata"] = std::move(metadata);
    }
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Post(path, params, ""));
    (void)r;
    return {};
}

Result<std::string> HttpStripeApi::FindPriceId(const std::string& lookup_key) {
    {
        std::lock_guard lock(mu_);
        if (auto it = price_ids_.find(lookup_key); it != price_ids_.end()) return it->second;
    }
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Get("/v1/prices", bj::object{{"lookup_keys", bj::array{bj::value(lookup_key)}},
                                                                          {"active", "true"},
                                                                          {"limit", "1"}}));
    const auto* data = r.body.is_object() ? r.body.get_object().if_contains("data") : nullptr;
    if (data == nullptr || !data->is_array() || data->get_array().empty()) {
        return NotFound("Stripe has no active price with lookup_key '" + lookup_key +
                            "': create it in the Stripe dashboard or run `tally catalog push`",
                        "lookup_key");
    }
    const std::string id = StringField(data->get_array()[0], "id");
    std::lock_guard lock(mu_);
    price_ids_[lookup_key] = id;
    return id;
}

Result<HostedSession> HttpStripeApi::CreateCheckoutSession(const CheckoutSessionRequest& request) {
    bj::object metadata{{"tally_customer_id", request.client_reference_id}};
    for (const auto& [k, v] : request.metadata) metadata[k] = v;
    bj::object params{{"mode", request.mode},
                      {"customer", request.customer.str()},
                      {"client_reference_id", request.client_reference_id},
                      {"success_url", request.success_url},
                      {"cancel_url", request.cancel_url},
                      {"metadata", metadata}};
    if (request.mode == "payment") {
        if (!request.payment_line) return InvalidArgument("a payment-mode Checkout Session needs its line item");
        const CheckoutLineItem& line = *request.payment_line;
        params["line_items"] = bj::array{bj::object{
            {"price_data", bj::object{{"currency", line.currency},
                                      {"unit_amount", std::to_string(line.unit_amount_minor)},
                                      {"product_data", bj::object{{"name", line.product_name}}}}},
            {"quantity", "1"}}};
        bj::object intent_metadata{{"tally_customer_id", request.client_reference_id}};
        for (const auto& [k, v] : request.payment_intent_metadata) intent_metadata[k] = v;
        params["payment_intent_data"] = bj::object{{"metadata", std::move(intent_metadata)}};
    } else {
        params["line_items"] = bj::array{bj::object{{"price", request.price_id}, {"quantity", "1"}}};
        bj::object subscription_data{{"metadata", bj::object{{"tally_customer_id", request.client_reference_id}}}};
        if (request.trial_period_days > 0) {
            subscription_data["trial_period_days"] = std::to_string(request.trial_period_days);
        }
        params["subscription_data"] = std::move(subscription_data);
    }
    return Session(client_.Post("/v1/checkout/sessions", params, request.idempotency_key));
}

Result<StripePaymentData> HttpStripeApi::CreatePaymentIntent(const StripePaymentIntentCreate& request) {
    bj::object metadata;
    for (const auto& [k, v] : request.metadata) metadata[k] = v;
    bj::object params{{"customer", request.customer.str()},
                      {"amount", std::to_string(request.amount_minor)},
                      {"currency", request.currency},
                      {"payment_method", request.payment_method},
                      {"confirm", "true"},
                      {"off_session", request.off_session ? "true" : "false"},
                      {"metadata", std::move(metadata)}};
    if (!request.description.empty()) params["description"] = request.description;
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Post("/v1/payment_intents", params, request.idempotency_key));
    if (!r.body.is_object()) return Unavailable("Stripe answered with no PaymentIntent object");
    auto decoded = DecodeStripePaymentIntent(r.body.get_object());
    if (!decoded.ok()) return Unavailable("Stripe answered with a PaymentIntent Tally cannot read: " + decoded.error().message);
    return decoded;
}

Result<HostedSession> HttpStripeApi::CreatePortalSession(const StripeCustomerId& customer, const std::string& return_url) {
    bj::object params{{"customer", customer.str()}};
    if (!return_url.empty()) params["return_url"] = return_url;
    return Session(client_.Post("/v1/billing_portal/sessions", params));
}

Result<std::pair<std::string, bool>> HttpStripeApi::EnsurePrice(const StripePriceSpec& spec) {
    auto existing = FindPriceId(spec.lookup_key);
    if (existing.ok()) return std::make_pair(*existing, false);
    if (existing.error().code != ErrorCode::kNotFound) return existing.error();
    // The product may exist from an earlier push (its id is stable); create it only when missing.
    auto product = client_.Get("/v1/products/" + spec.product_id);
    if (!product.ok()) {
        if (product.error().code != ErrorCode::kNotFound) return product.error();
        TALLY_TRY(client_.Post("/v1/products", bj::object{{"id", spec.product_id}, {"name", spec.product_name}},
                               "tally_product_" + spec.product_id)
                      );
    }
    bj::object params{{"product", spec.product_id},
                      {"currency", spec.currency},
                      {"unit_amount", std::to_string(spec.unit_amount_minor)},
                      {"lookup_key", spec.lookup_key},
                      {"recurring", bj::object{{"interval", spec.interval},
                                               {"interval_count", std::to_string(spec.interval_count)}}}};
    TALLY_ASSIGN_OR_RETURN(Response r, client_.Post("/v1/prices", params, "tally_price_" + spec.lookup_key));
    const std::string id = StringField(r.body, "id");
    std::lock_guard lock(mu_);
    price_ids_[spec.lookup_key] = id;
    return std::make_pair(id, true);
}

Result<std::vector<std::string>> HttpStripeApi::SyncPlan(const StripePlanSpec& spec) {
    auto product = client_.Get("/v1/products/" + spec.product_id);
    bool was_inactive = false;  // an archived plan restored: its prices are reactivated too
    if (!product.ok()) {
        if (product.error().code != ErrorCode::kNotFound) return product.error();
        TALLY_TRY(client_.Post("/v1/products",
                               bj::object{{"id", spec.product_id}, {"name", spec.name},
                                          {"active", spec.active ? "true" : "false"}},
                               "tally_product_" + spec.product_id));
    } else if (StringField(product->body, "name") != spec.name ||
               (product->body.is_object() && product->body.get_object().if_contains("active") &&
                product->body.at("active").is_bool() && product->body.at("active").get_bool() != spec.active)) {
        was_inactive = product->body.at("active").is_bool() && !product->body.at("active").get_bool();
        // No idempotency key: setting the same name and flag again is harmless.
        TALLY_TRY(client_.Post("/v1/products/" + spec.product_id,
                               bj::object{{"name", spec.name}, {"active", spec.active ? "true" : "false"}}, ""));
    }
    std::vector<std::string> ids;
    for (const auto& p : spec.prices) {
        std::string id = p.stripe_price_id;
        if (id.empty() && p.active) {
            // Adopt what an earlier push (or `tally catalog push`) made, when it is this very price.
            TALLY_ASSIGN_OR_RETURN(Response found,
                                   client_.Get("/v1/prices", bj::object{{"lookup_keys", bj::array{bj::value(p.lookup_key)}},
                                                                        {"active", "true"},
                                                                        {"limit", "1"}}));
            const auto* data = found.body.is_object() ? found.body.get_object().if_contains("data") : nullptr;
            if (data != nullptr && data->is_array() && !data->get_array().empty()) {
                const bj::value& existing = data->get_array()[0];
                const auto* recurring = existing.is_object() ? existing.get_object().if_contains("recurring") : nullptr;
                const auto* amount = existing.is_object() ? existing.get_object().if_contains("unit_amount") : nullptr;
                const bool same = amount != nullptr && amount->is_int64() && amount->get_int64() == p.unit_amount_minor &&
                                  StringField(existing, "currency") == p.currency && recurring != nullptr &&
                                  recurring->is_object() && StringField(*recurring, "interval") == p.interval &&
                                  recurring->get_object().if_contains("interval_count") &&
                                  recurring->at("interval_count").is_int64() &&
                                  recurring->at("interval_count").get_int64() == p.interval_count;
                if (same) id = StringField(existing, "id");
            }
            if (id.empty()) {
                bj::object params{{"product", spec.product_id},
                                  {"currency", p.currency},
                                  {"unit_amount", std::to_string(p.unit_amount_minor)},
                                  {"lookup_key", p.lookup_key},
                                  {"transfer_lookup_key", "true"},
                                  {"recurring", bj::object{{"interval", p.interval},
                                                           {"interval_count", std::to_string(p.interval_count)}}}};
                TALLY_ASSIGN_OR_RETURN(Response r, client_.Post("/v1/prices", params, "tally_price_" + p.tally_id));
                id = StringField(r.body, "id");
            }
            std::lock_guard lock(mu_);
            price_ids_[p.lookup_key] = id;  // the key names this price now
        } else if (!id.empty() && (!p.active || was_inactive)) {
            TALLY_TRY(client_.Post("/v1/prices/" + id, bj::object{{"active", p.active ? "true" : "false"}}, ""));
        }
        ids.push_back(id);
    }
    return ids;
}

WebhookEndpointMonitor::WebhookEndpointMonitor(Client& client, std::string endpoint_id, std::string url,
                                               int64_t interval_ms)
    : client_(client), endpoint_id_(std::move(endpoint_id)), url_(std::move(url)), interval_ms_(interval_ms) {
    thread_ = std::thread([this] { Run(); });
}

WebhookEndpointMonitor::~WebhookEndpointMonitor() {
    {
        std::lock_guard lock(mu_);
        stopping_ = true;
    }
    cv_.notify_all();
    thread_.join();
}

std::string WebhookEndpointMonitor::State() const {
    switch (state_.load()) {
        case 1: return "registered";
        case 2: return "missing";
        default: return "unknown";
    }
}

std::string WebhookEndpointMonitor::CheckNow() {
    int state = 0;
    if (!endpoint_id_.empty()) {
        auto got = client_.Get("/v1/webhook_endpoints/" + endpoint_id_);
        if (got.ok()) {
            // Stripe answers a deleted object with {"deleted": true} (or a 404); a disabled endpoint sends nothing.
            const auto* body = got->body.if_object();
            const auto* deleted = body ? body->if_contains("deleted") : nullptr;
            const auto* status = body ? body->if_contains("status") : nullptr;
            const bool gone = (deleted && deleted->is_bool() && deleted->get_bool()) ||
                              (status && status->is_string() && status->get_string() == "disabled");
            state = gone ? 2 : 1;
        } else if (got.error().code == ErrorCode::kNotFound) {
            state = 2;
        }
    } else {
        bool found = false;
        Status listed = client_.ListAll("/v1/webhook_endpoints", {}, [&](const boost::json::object& e) {
            const auto* url = e.if_contains("url");
            const auto* status = e.if_contains("status");
            found = url && url->is_string() && url->get_string() == url_ &&
                    !(status && status->is_string() && status->get_string() == "disabled");
            return !found;
        });
        if (listed.ok()) state = found ? 1 : 2;
    }
    state_ = state;
    return State();
}

void WebhookEndpointMonitor::Run() {
    std::unique_lock lock(mu_);
    for (;;) {
        lock.unlock();
        (void)CheckNow();
        lock.lock();
        if (cv_.wait_for(lock, std::chrono::milliseconds(interval_ms_), [this] { return stopping_; })) {
            return;
        }
    }
}

}  // namespace tally::stripe
