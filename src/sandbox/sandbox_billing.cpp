// Subscriptions, invoices, prorations, dunning and test-clock transitions.
#include <algorithm>
#include <queue>

#include "adapters/crypto.hpp"
#include "sandbox/sandbox.hpp"
#include "sandbox/sandbox_util.hpp"
#include "domain/money.hpp"
#include "domain/proration.hpp"
#include "domain/time.hpp"

namespace tally::sandbox {

using namespace detail;  // NOLINT(google-build-using-namespace): the sandbox's own helpers

namespace {

constexpr int64_t kIncompleteExpirySeconds = int64_t{23} * 3600;  // Stripe: an unpaid first invoice expires the subscription
constexpr int kTransitionsPerCallMax = 10000;  // RunDueTransitions' bound: years of daily transitions

bj::object& Item(bj::object& s) { return s.at("items").at("data").as_array()[0].as_object(); }
const bj::object& Item(const bj::object& s) { return s.at("items").at("data").as_array()[0].as_object(); }

BillingInterval IntervalOf(const bj::object& price) {
    const auto& recurring = price.at("recurring").as_object();
    return BillingInterval{*ParseIntervalUnit(recurring.at("interval").as_string()), I64(recurring.at("interval_count"))};
}

bool IsLive(const std::string& status) { return status == "active" || status == "trialing" || status == "past_due"; }

/// Stripe's description of a price on an invoice line: the nickname, else the price id.
std::string PriceLabel(const bj::object& price) {
    const std::string nickname = Str(price, "nickname");
    return nickname.empty() ? Str(price, "id") : nickname;
}

/// An invoice line of |subscription|'s item; |proration| marks prorations as Stripe does.
bj::object Line(const bj::object& line_template, const std::string& id, int64_t amount, const std::string& currency,
                const std::string& description, int64_t start, int64_t end, bool proration, const bj::object& sub,
                const bj::object& price, int64_t quantity) {
    bj::object line = line_template;
    line["id"] = id;
    line["invoice"] = nullptr;
    line["amount"] = amount;
    line["subtotal"] = amount;
    line["currency"] = currency;
    line["quantity"] = quantity;
    line["description"] = description;
    line["discount_amounts"] = bj::array();
    line["discounts"] = bj::array();
    line["livemode"] = false;
    line["metadata"] = bj::object();
    line["subscription"] = sub.at("id");
    line["period"] = bj::object{{"start", start}, {"end", end}};
    line["parent"] = bj::object{
        {"type", "subscription_item_details"},
        {"invoice_item_details", nullptr},
        {"subscription_item_details",
         bj::object{{"invoice_item", nullptr}, {"proration", proration},
                    {"proration_details", bj::object{{"credited_items", nullptr}}}, {"subscription", sub.at("id")},
                    {"subscription_item", Item(sub).at("id")}}}};
    line["pricing"] = bj::object{{"type", "price_details"},
                                 {"price_details", bj::object{{"price", price.at("id")}, {"product", price.at("product")}}},
                                 {"unit_amount_decimal", price.at("unit_amount_decimal")}};
    return line;
}

}  // namespace

std::optional<DunningEndState> ParseDunningEndState(const std::string& text) {
    if (text == "canceled") return DunningEndState::kCanceled;
    if (text == "unpaid") return DunningEndState::kUnpaid;
    if (text == "past_due") return DunningEndState::kPastDue;
    return std::nullopt;
}

void Sandbox::SetStatus(bj::object& s, const std::string& status, bj::object& previous) {
    if (Str(s, "status") == status) return;
    if (!previous.contains("status")) previous["status"] = s.at("status");
    s["status"] = status;
}

std::string Sandbox::CustomerDefaultPaymentMethod(const std::string& customer_id) {
    const bj::object* customer = Find("customer", customer_id);
    if (customer == nullptr) return {};
    const auto* settings = customer->if_contains("invoice_settings");
    return settings && settings->is_object() ? Str(settings->get_object(), "default_payment_method") : std::string();
}

std::string Sandbox::DefaultPaymentMethod(const bj::object& s) {
    std::string own = Str(s, "default_payment_method");
    if (!own.empty()) return own;
    return CustomerDefaultPaymentMethod(Str(s, "customer"));
}

bj::object Sandbox::PeriodLine(const bj::object& s, const std::string& invoice_id) {
    const bj::object& item = Item(s);
    const bj::object& price = item.at("price").as_object();
    const int64_t quantity = I64(item.at("quantity"));
    const bool trialing = Str(s, "status") == "trialing";
    const int64_t amount = trialing ? 0 : I64(price.at("unit_amount")) * quantity;
    bj::object line =
        Line(LineTemplate(), NewId("il"), amount, Str(s, "currency"),
             std::to_string(quantity) + " × " + PriceLabel(price) + (trialing ? " (trial)" : ""),
             I64(item.at("current_period_start")), I64(item.at("current_period_end")), false, s, price, quantity);
    line["invoice"] = invoice_id;
    return line;
}

Result<bj::array> Sandbox::ProrationLines(const bj::object& s, const bj::object& price, int64_t quantity, int64_t at) {
    const bj::object& item = Item(s);
    const bj::object& old_price = item.at("price").as_object();
    TALLY_ASSIGN_OR_RETURN(Currency currency, Currency::Parse(Str(s, "currency")));
    const Money from(I64(old_price.at("unit_amount")) * I64(item.at("quantity")), currency);
    const Money to(I64(price.at("unit_amount")) * quantity, currency);
    const Period period{Timestamp(I64(item.at("current_period_start"))), Timestamp(I64(item.at("current_period_end")))};
    TALLY_ASSIGN_OR_RETURN(Proration p,
                           ProrateChange(from, IntervalOf(old_price), to, IntervalOf(price), period, Timestamp(at)));
    const bj::object& tmpl = LineTemplate();
    const std::string date = FormatRfc3339(Timestamp(at));
    bj::array lines;
    lines.push_back(Line(tmpl, NewId("il"), p.credit.amount_minor(), currency.code(),
                         "Unused time on " + std::to_string(I64(item.at("quantity"))) + " × " + PriceLabel(old_price) +
                             " after " + date,
                         at, period.end.unix_seconds(), true, s, old_price, I64(item.at("quantity"))));
    lines.push_back(Line(tmpl, NewId("il"), p.charge.amount_minor(), currency.code(),
                         (p.anchor_reset ? "" : "Remaining time on ") + std::to_string(quantity) + " × " +
                             PriceLabel(price) + (p.anchor_reset ? "" : " after " + date),
                         p.period.start.unix_seconds(), p.period.end.unix_seconds(), !p.anchor_reset, s, price,
                         quantity));
    return lines;
}

bj::object Sandbox::DraftInvoice(const bj::object& s, const std::string& id, bj::array lines, int64_t starting_balance) {
    int64_t total = 0;
    for (auto& line : lines) {
        line.as_object()["invoice"] = id;
        total += I64(line.at("amount"));
    }
    const bj::object& customer = *Find("customer", Str(s, "customer"));
    bj::object inv = Template("invoice");
    inv["id"] = id;
    inv["customer"] = s.at("customer");
    inv["customer_email"] = customer.at("email");
    inv["customer_name"] = customer.at("name");
    inv["currency"] = s.at("currency");
    inv["collection_method"] = "charge_automatically";
    inv["lines"] = bj::object{{"object", "list"}, {"data", std::move(lines)}, {"has_more", false},
                              {"url", "/v1/invoices/" + id + "/lines"}};
    inv["parent"] = bj::object{{"type", "subscription_details"}, {"quote_details", nullptr},
                               {"subscription_details", bj::object{{"metadata", nullptr}, {"subscription", s.at("id")}}}};
    for (const char* key : {"subtotal", "subtotal_excluding_tax", "total", "total_excluding_tax"}) inv[key] = total;
    // A negative customer balance is credit (Stripe): it reduces what is due; a negative total becomes credit.
    const int64_t amount_due = std::max<int64_t>(0, total + starting_balance);
    inv["amount_due"] = amount_due;
    inv["amount_remaining"] = amount_due;
    inv["amount_paid"] = 0;
    inv["amount_overpaid"] = 0;
    inv["amount_shipping"] = 0;
    inv["starting_balance"] = starting_balance;
    inv["ending_balance"] = std::min<int64_t>(0, total + starting_balance);
    inv["attempt_count"] = 0;
    inv["attempted"] = false;
    inv["status"] = "draft";
    inv["number"] = nullptr;
    inv["livemode"] = false;
    inv["metadata"] = bj::object();
    inv["discounts"] = bj::array();
    SetNull(inv, {"default_payment_method", "from_invoice", "last_finalization_error", "latest_revision",
                  "next_payment_attempt"});
    inv["test_clock"] = s.at("test_clock");
    inv["status_transitions"] = bj::object{{"finalized_at", nullptr}, {"marked_uncollectible_at", nullptr},
                                           {"paid_at", nullptr}, {"voided_at", nullptr}};
    return inv;
}

std::string Sandbox::CreateInvoice(bj::object& s, const std::string& billing_reason, bj::array lines, int64_t at) {
    std::string id = NewId("in");
    const std::string subscription_id = Str(s, "id");
    const std::string customer_id = Str(s, "customer");
    // Pending invoice items of this subscription (prorations) are billed on this invoice.
    auto pending = pending_items_.find(subscription_id);
    for (const auto& ii_id : pending == pending_items_.end() ? std::vector<std::string>() : pending->second) {
        bj::object& ii = objects_.at(ii_id);
        ii["invoice"] = id;
        bj::object line = ii.at("line").as_object();
        line["parent"].as_object()["subscription_item_details"].as_object()["invoice_item"] = ii_id;
        lines.push_back(std::move(line));
    }
    if (pending != pending_items_.end()) pending_items_.erase(pending);
    bj::object& customer = *Find("customer", customer_id);
    bj::object inv = DraftInvoice(s, id, std::move(lines), I64(customer.at("balance")));
    customer["balance"] = I64(inv.at("ending_balance"));
    const bj::object& item = Item(s);
    inv["created"] = at;
    inv["effective_at"] = at;
    inv["period_start"] = item.at("current_period_start");
    inv["period_end"] = item.at("current_period_end");
    inv["billing_reason"] = billing_reason;
    inv["auto_advance"] = true;
    inv["due_date"] = nullptr;
    inv["webhooks_delivered_at"] = at;
    inv["hosted_invoice_url"] = config_.public_url + "/invoices/" + id;
    Put("invoice", inv);
    s["latest_invoice"] = id;
    bj::object& stored = objects_.at(id);
    Emit("invoice.created", stored, nullptr, at);
    const auto* pause = s.if_contains("pause_collection");
    const std::string pause_behavior = pause && pause->is_object() ? Str(pause->get_object(), "behavior") : "";
    if (pause_behavior == "keep_as_draft") return id;  // stays a draft while collection is paused
    stored["status"] = "open";
    stored["number"] = Str(customer, "invoice_prefix") + "-" + std::to_string(order_["invoice"].size());
    stored["status_transitions"].as_object()["finalized_at"] = at;
    Emit("invoice.finalized", stored, nullptr, at);
    if (pause_behavior == "void") {
        stored["status"] = "void";
        stored["amount_remaining"] = 0;
        stored["status_transitions"].as_object()["voided_at"] = at;
        Emit("invoice.voided", stored, nullptr, at);
    } else if (pause_behavior == "mark_uncollectible") {
        stored["status"] = "uncollectible";
        stored["status_transitions"].as_object()["marked_uncollectible_at"] = at;
        Emit("invoice.marked_uncollectible", stored, nullptr, at);
    }
    return id;
}

Sandbox::PaymentOutcome Sandbox::CollectInvoice(const std::string& invoice_id, int64_t at, bool on_session,
                                                const std::string& payment_method) {
    bj::object& inv = objects_.at(invoice_id);
    PaymentOutcome outcome;
    if (Str(inv, "status") != "open") return outcome;
    const std::string sub_id = InvoiceSubscriptionId(inv);
    bj::object* s = sub_id.empty() ? nullptr : Find("subscription", sub_id);
    const int64_t amount = I64(inv.at("amount_remaining"));
    if (amount > 0) {
        std::string pm = payment_method;
        if (pm.empty()) pm = Str(inv, "default_payment_method");
        if (pm.empty() && s != nullptr) pm = DefaultPaymentMethod(*s);
        if (pm.empty()) {
            outcome.kind = PaymentOutcome::Kind::kNoPaymentMethod;
            outcome.code = "invoice_no_payment_method";
            outcome.message = "The customer has no default payment method for this invoice.";
        } else {
            bj::object& pi = NewPaymentIntent(Str(inv, "customer"), amount, Str(inv, "currency"),
                                              Str(inv, "billing_reason") == "subscription_create" ? "Subscription creation"
                                                                                                   : "Subscription update",
                                              at);
            pi["metadata"] = bj::object();
            intent_invoice_[Str(pi, "id")] = invoice_id;
            outcome = ConfirmIntent(pi, pm, !on_session, at);
        }
        inv["attempt_count"] = I64(inv.at("attempt_count")) + 1;
        inv["attempted"] = true;
    }
    ApplyInvoiceOutcome(invoice_id, outcome, at);
    return outcome;
}

void Sandbox::ApplyInvoiceOutcome(const std::string& invoice_id, const PaymentOutcome& outcome, int64_t at) {
    bj::object& inv = objects_.at(invoice_id);
    const std::string sub_id = InvoiceSubscriptionId(inv);
    bj::object* s = sub_id.empty() ? nullptr : Find("subscription", sub_id);
    if (outcome.kind == PaymentOutcome::Kind::kSucceeded) {
        inv["status"] = "paid";
        inv["amount_paid"] = I64(inv.at("amount_due"));  // a value: operator[] may move inv's members
        inv["amount_remaining"] = 0;
        inv["next_payment_attempt"] = nullptr;
        inv["status_transitions"].as_object()["paid_at"] = at;
        Emit("invoice.paid", inv, nullptr, at);
        Emit("invoice.payment_succeeded", inv, nullptr, at);
        if (s == nullptr) return;
        open_invoices_[sub_id].erase(invoice_id);
        const std::string status = Str(*s, "status");
        if ((status == "incomplete" || status == "past_due" || status == "unpaid") && open_invoices_[sub_id].empty()) {
            bj::object previous;
            SetStatus(*s, "active", previous);
            Emit("customer.subscription.updated", *s, &previous, at);
        }
        return;
    }
    Emit("invoice.payment_failed", inv, nullptr, at);
    if (outcome.kind == PaymentOutcome::Kind::kRequiresAction) Emit("invoice.payment_action_required", inv, nullptr, at);
    if (s == nullptr) return;
    const std::string status = Str(*s, "status");
    if (status == "incomplete") return;  // the first invoice is not retried: it expires after 23 hours
    if (status == "active" || status == "trialing") {
        bj::object previous;
        SetStatus(*s, "past_due", previous);
        Emit("customer.subscription.updated", *s, &previous, at);
    }
    // Dunning: retry on the configured days after the first attempt; after the last, apply the end state.
    const int64_t attempts = I64(inv.at("attempt_count"));
    const int64_t first_attempt = I64(inv.at("status_transitions").at("finalized_at"));
    if (attempts >= 1 && static_cast<size_t>(attempts - 1) < config_.dunning_retry_days.size()) {
        inv["next_payment_attempt"] =
            std::max(at + 1, first_attempt + config_.dunning_retry_days[static_cast<size_t>(attempts - 1)] * kSecondsPerDay);
        open_invoices_[sub_id].insert(invoice_id);
        return;
    }
    inv["next_payment_attempt"] = nullptr;
    open_invoices_[sub_id].erase(invoice_id);
    if (Str(*s, "status") != "past_due") return;
    switch (config_.dunning_end_state) {
        case DunningEndState::kCanceled:
            EndSubscription(*s, at, "payment_failed");
            break;
        case DunningEndState::kUnpaid: {
            bj::object previous;
            SetStatus(*s, "unpaid", previous);
            Emit("customer.subscription.updated", *s, &previous, at);
            break;
        }
        case DunningEndState::kPastDue:
            break;
    }
}

void Sandbox::EndSubscription(bj::object& s, int64_t at, const std::string& reason) {
    s["status"] = "canceled";
    s["canceled_at"] = at;
    s["ended_at"] = at;
    s["cancel_at_period_end"] = false;
    s["cancel_at"] = nullptr;
    s["cancellation_details"] = bj::object{{"comment", nullptr}, {"feedback", nullptr}, {"reason", reason}};
    // Stripe stops collecting a canceled subscription's open invoices.
    const std::string id = Str(s, "id");
    for (const auto& inv_id : open_invoices_[id]) objects_.at(inv_id)["next_payment_attempt"] = nullptr;
    open_invoices_.erase(id);
    // Stripe cancels the schedule of a subscription that ends.
    if (s.at("schedule").is_string()) {
        if (bj::object* schedule = Find("subscription_schedule", Str(s, "schedule"));
            schedule && (Str(*schedule, "status") == "active" || Str(*schedule, "status") == "not_started")) {
            bj::object previous{{"status", schedule->at("status")}};
            (*schedule)["status"] = "canceled";
            (*schedule)["canceled_at"] = at;
            (*schedule)["current_phase"] = nullptr;
            Emit("subscription_schedule.canceled", *schedule, &previous, at);
        }
    }
    Emit("customer.subscription.deleted", s, nullptr, at);
}

http::Response Sandbox::CreateSubscription(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"customer", "items", "trial_period_days", "trial_end", "cancel_at_period_end",
                                        "metadata", "default_payment_method", "payment_behavior", "collection_method",
                                        "proration_behavior", "trial_settings", "off_session", "description"})) {
        return *bad;
    }
    const std::string customer_id = Str(params, "customer");
    if (customer_id.empty()) return Missing("customer");
    const bj::object* customer = Find("customer", customer_id);
    if (customer == nullptr) return Invalid("customer", "No such customer: '" + customer_id + "'");
    const auto* items = params.if_contains("items");
    if (items == nullptr) return Missing("items");
    if (!items->is_array() || items->get_array().size() != 1 || !items->get_array()[0].is_object()) {
        return Invalid("items", "The sandbox supports exactly one subscription item (items[0][price]).");
    }
    const bj::object& item_params = items->get_array()[0].get_object();
    const std::string price_id = Str(item_params, "price");
    if (price_id.empty()) return Missing("items[0][price]");
    const bj::object* price = Find("price", price_id);
    if (price == nullptr) return Invalid("items[0][price]", "No such price: '" + price_id + "'");
    if (!price->at("active").as_bool()) return Invalid("items[0][price]", kInactivePrice);
    if (!price->at("recurring").is_object()) {
        return Invalid("items[0][price]", "The price specified is set to `type=one_time` but this field only accepts "
                                          "prices with `type=recurring`.");
    }
    const std::string quantity_text = Str(item_params, "quantity");
    const auto quantity = quantity_text.empty() ? std::optional<int64_t>(1) : Int(quantity_text);
    if (!quantity || *quantity < 1) return Invalid("items[0][quantity]", "Invalid integer: " + quantity_text);
    const std::string payment_behavior = Has(params, "payment_behavior") ? Str(params, "payment_behavior") : "allow_incomplete";
    if (payment_behavior != "allow_incomplete" && payment_behavior != "default_incomplete" &&
        payment_behavior != "error_if_incomplete") {
        return Invalid("payment_behavior", "Invalid payment_behavior: must be one of allow_incomplete, "
                                           "default_incomplete or error_if_incomplete");
    }
    if (Has(params, "collection_method") && Str(params, "collection_method") != "charge_automatically") {
        return Invalid("collection_method", "The sandbox supports collection_method=charge_automatically only.");
    }
    const std::string pm = Str(params, "default_payment_method");
    if (!pm.empty()) {
        const bj::object* method = Find("payment_method", pm);
        if (method == nullptr || Str(*method, "customer") != customer_id) {
            return Invalid("default_payment_method", "The customer does not have a payment method with the ID " + pm +
                                                         ". The payment method must be attached to the customer.");
        }
    }
    std::string missing_pm_behavior = "create_invoice";
    if (const auto* ts = params.if_contains("trial_settings")) {
        const auto* eb = ts->is_object() ? ts->get_object().if_contains("end_behavior") : nullptr;
        missing_pm_behavior = eb && eb->is_object() ? Str(eb->get_object(), "missing_payment_method") : "";
        if (missing_pm_behavior != "create_invoice" && missing_pm_behavior != "pause" && missing_pm_behavior != "cancel") {
            return Invalid("trial_settings[end_behavior][missing_payment_method]",
                           "Invalid value: must be one of cancel, create_invoice or pause");
        }
    }

    const int64_t now = NowFor(customer_id);
    std::optional<int64_t> trial_end;
    if (Has(params, "trial_period_days")) {
        const auto days = Int(Str(params, "trial_period_days"));
        if (!days || *days < 0 || *days > 730) return Invalid("trial_period_days", "Invalid integer");
        if (*days > 0) trial_end = now + *days * kSecondsPerDay;
    }
    if (Has(params, "trial_end") && Str(params, "trial_end") != "now") {
        const auto end = Int(Str(params, "trial_end"));
        if (!end || *end <= now) return Invalid("trial_end", "Invalid timestamp: must be an integer Unix timestamp in the future.");
        trial_end = *end;
    }
    const bj::object& recurring = price->at("recurring").as_object();
    const BillingInterval interval{*ParseIntervalUnit(recurring.at("interval").as_string()),
                                   I64(recurring.at("interval_count"))};
    const int64_t amount = I64(price->at("unit_amount")) * *quantity;
    // error_if_incomplete: Stripe refuses (402) and creates nothing when the first payment would not succeed.
    if (!trial_end && amount > 0 && payment_behavior == "error_if_incomplete") {
        const std::string payer = pm.empty() ? CustomerDefaultPaymentMethod(customer_id) : pm;
        if (payer.empty()) {
            return StripeError(400, "invalid_request_error", "resource_missing",
                               "This customer has no attached payment source or default payment method.");
        }
        const PaymentOutcome predicted = PredictCharge(payer, Str(params, "off_session") == "true");
        if (predicted.kind != PaymentOutcome::Kind::kSucceeded) {
            return CardError(predicted.code, predicted.decline_code, predicted.message);
        }
    }
    // During a trial the period is the trial; after it, periods follow the anchor (Stripe's month-end rule).
    const int64_t anchor = trial_end.value_or(now);
    const int64_t period_end = trial_end ? *trial_end : NthBoundary(Timestamp(now), interval, 1)->unix_seconds();

    const std::string id = NewId("sub");
    bj::object s = Template("subscription");
    bj::object item = s.at("items").at("data").as_array()[0].as_object();
    item["id"] = NewId("si");
    item["price"] = *price;
    item["plan"] = nullptr;
    item["quantity"] = *quantity;
    item["subscription"] = id;
    item["created"] = now;
    item["current_period_start"] = now;
    item["current_period_end"] = period_end;
    item["metadata"] = bj::object();
    item["discounts"] = bj::array();
    item["tax_rates"] = bj::array();
    item["billing_thresholds"] = nullptr;
    item_subscription_[Str(item, "id")] = id;
    s["id"] = id;
    s["customer"] = customer_id;
    s["status"] = trial_end ? "trialing" : "incomplete";
    s["items"] = bj::object{{"object", "list"}, {"data", bj::array{item}}, {"has_more", false},
                            {"url", "/v1/subscription_items?subscription=" + id}};
    s["created"] = now;
    s["start_date"] = now;
    s["billing_cycle_anchor"] = anchor;
    s["billing_cycle_anchor_config"] = nullptr;
    s["trial_start"] = trial_end ? bj::value(now) : nullptr;
    s["trial_end"] = trial_end ? bj::value(*trial_end) : nullptr;
    s["trial_settings"] = bj::object{{"end_behavior", bj::object{{"missing_payment_method", missing_pm_behavior}}}};
    const bool cancel_at_period_end = Str(params, "cancel_at_period_end") == "true";
    s["cancel_at_period_end"] = cancel_at_period_end;
    s["cancel_at"] = cancel_at_period_end ? bj::value(period_end) : nullptr;
    s["canceled_at"] = nullptr;
    s["ended_at"] = nullptr;
    s["cancellation_details"] = bj::object{{"comment", nullptr}, {"feedback", nullptr}, {"reason", nullptr}};
    s["currency"] = price->at("currency");
    s["livemode"] = false;
    SetNull(s, {"latest_invoice", "pending_update", "pending_setup_intent", "pending_invoice_item_interval",
                "next_pending_invoice_item_invoice", "pause_collection", "schedule", "transfer_data"});
    s["discounts"] = bj::array();
    s["description"] = Has(params, "description") ? bj::value(Str(params, "description")) : nullptr;
    s["days_until_due"] = nullptr;
    s["collection_method"] = "charge_automatically";
    s["default_payment_method"] = pm.empty() ? bj::value(nullptr) : bj::value(pm);
    s["test_clock"] = customer->at("test_clock");
    s["metadata"] = bj::object();
    if (auto bad = MergeMetadata(s, params)) return *bad;
    Put("subscription", s);
    bj::object& stored = objects_.at(id);
    Emit("customer.subscription.created", stored, nullptr, now);
    const std::string invoice_id = CreateInvoice(stored, "subscription_create", bj::array{PeriodLine(stored, "")}, now);
    const bool zero = I64(objects_.at(invoice_id).at("amount_due")) == 0;
    if (zero || payment_behavior != "default_incomplete") CollectInvoice(invoice_id, now, true);
    if (zero && Str(stored, "status") == "incomplete") {
        bj::object previous;
        SetStatus(stored, "active", previous);
        Emit("customer.subscription.updated", stored, &previous, now);
    }
    return Json(200, stored);
}

std::optional<http::Response> Sandbox::ChangeItem(bj::object& s, const bj::object& price, int64_t quantity,
                                                  const std::string& proration_behavior, int64_t at,
                                                  const std::string& payment_behavior) {
    bj::object& item = Item(s);
    if (!price.at("recurring").is_object()) {
        return Invalid("items[0][price]", "The price specified is set to `type=one_time` but this field only accepts "
                                          "prices with `type=recurring`.");
    }
    if (Str(price, "currency") != Str(s, "currency")) {
        return Invalid("items[0][price]", "The price's currency (" + Str(price, "currency") +
                                              ") must match the subscription's currency (" + Str(s, "currency") + ").");
    }
    const bool interval_change = !(IntervalOf(price) == IntervalOf(item.at("price").as_object()));
    const bool trialing = Str(s, "status") == "trialing";
    bj::array lines;
    if (!trialing && proration_behavior != "none") {
        auto prorations = ProrationLines(s, price, quantity, at);
        if (!prorations.ok()) return Invalid("proration_date", prorations.error().message);
        lines = std::move(*prorations);
    }
    const bool invoice_now = !trialing && (interval_change || proration_behavior == "always_invoice");
    if (invoice_now && payment_behavior == "error_if_incomplete") {
        int64_t total = 0;
        for (const auto& l : lines) total += I64(l.at("amount"));
        if (interval_change && lines.empty()) total = I64(price.at("unit_amount")) * quantity;
        if (total > 0) {
            const PaymentOutcome predicted = PredictCharge(DefaultPaymentMethod(s), false);
            if (predicted.kind != PaymentOutcome::Kind::kSucceeded) {
                return CardError(predicted.code, predicted.decline_code, predicted.message);
            }
        }
    }
    item["price"] = price;
    item["quantity"] = quantity;
    if (interval_change && !trialing) {
        // Stripe resets the billing cycle anchor to the change and invoices the new period at once.
        const auto end = NthBoundary(Timestamp(at), IntervalOf(price), 1);
        item["current_period_start"] = at;
        item["current_period_end"] = end->unix_seconds();
        s["billing_cycle_anchor"] = at;
        if (lines.empty()) lines.push_back(PeriodLine(s, ""));
        if (s.at("cancel_at_period_end").as_bool()) s["cancel_at"] = end->unix_seconds();
    }
    if (invoice_now) {
        const std::string invoice_id = CreateInvoice(s, "subscription_update", std::move(lines), at);
        CollectInvoice(invoice_id, at, true);
        return std::nullopt;
    }
    // create_prorations: the lines wait as pending invoice items for the next invoice.
    for (auto& line : lines) {
        bj::object ii = Template("invoiceitem");
        const std::string ii_id = NewId("ii");
        ii["id"] = ii_id;
        ii["amount"] = line.at("amount");
        ii["net_amount"] = line.at("amount");
        ii["currency"] = s.at("currency");
        ii["customer"] = s.at("customer");
        ii["date"] = at;
        ii["description"] = line.at("description");
        ii["discountable"] = false;
        ii["invoice"] = nullptr;
        ii["livemode"] = false;
        ii["metadata"] = bj::object();
        ii["period"] = line.at("period");
        ii["proration"] = true;
        ii["quantity"] = line.at("quantity");
        ii["quantity_decimal"] = std::to_string(I64(line.at("quantity")));
        ii["test_clock"] = s.at("test_clock");
        ii["parent"] = bj::object{{"type", "subscription_details"},
                                  {"subscription_details", bj::object{{"subscription", s.at("id")},
                                                                      {"subscription_item", item.at("id")}}}};
        ii["pricing"] = line.at("pricing");
        ii["line"] = line;  // internal: the invoice line this item becomes
        Put("invoiceitem", ii);
        pending_items_[Str(s, "id")].push_back(ii_id);
        Emit("invoiceitem.created", Public(ii), nullptr, at);
    }
    return std::nullopt;
}

http::Response Sandbox::UpdateSubscription(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"cancel_at_period_end", "metadata", "proration_behavior", "proration_date",
                                        "items", "default_payment_method", "pause_collection", "payment_behavior",
                                        "description", "trial_end"})) {
        return *bad;
    }
    bj::object* s = Find("subscription", id);
    if (s == nullptr) return NoSuch("subscription", id);
    const std::string status = Str(*s, "status");
    if (status == "canceled" || status == "incomplete_expired") {
        return StripeError(400, "invalid_request_error", "",
                           "A canceled subscription can only update its cancellation_details and metadata.");
    }
    if (Has(params, "cancel_at_period_end") && s->at("schedule").is_string()) {
        return StripeError(400, "invalid_request_error", "",
                           "The subscription is managed by the subscription schedule `" + Str(*s, "schedule") +
                               "`, and updating any cancelation behavior directly is not allowed. Please update the "
                               "schedule instead.");
    }
    const std::string customer_id = Str(*s, "customer");
    const int64_t now = NowFor(customer_id);
    const std::string proration_behavior =
        Has(params, "proration_behavior") ? Str(params, "proration_behavior") : "create_prorations";
    if (proration_behavior != "create_prorations" && proration_behavior != "always_invoice" && proration_behavior != "none") {
        return Invalid("proration_behavior", "Invalid proration_behavior: must be one of create_prorations, "
                                             "always_invoice or none");
    }
    const std::string payment_behavior =
        Has(params, "payment_behavior") ? Str(params, "payment_behavior") : "allow_incomplete";
    if (payment_behavior != "allow_incomplete" && payment_behavior != "error_if_incomplete" &&
        payment_behavior != "pending_if_incomplete" && payment_behavior != "default_incomplete") {
        return Invalid("payment_behavior", "Invalid payment_behavior");
    }
    int64_t at = now;
    if (Has(params, "proration_date")) {
        const auto date = Int(Str(params, "proration_date"));
        const bj::object& item = Item(*s);
        if (!date || *date < I64(item.at("current_period_start")) || *date >= I64(item.at("current_period_end"))) {
            return Invalid("proration_date", "proration_date must be within the subscription's current period.");
        }
        at = *date;
    }
    // Validate everything before changing anything.
    const bj::object* new_price = nullptr;
    int64_t new_quantity = I64(Item(*s).at("quantity"));
    if (const auto* items = params.if_contains("items")) {
        if (!items->is_array() || items->get_array().size() != 1 || !items->get_array()[0].is_object()) {
            return Invalid("items", "The sandbox supports exactly one subscription item (items[0][id], items[0][price]).");
        }
        const bj::object& ip = items->get_array()[0].get_object();
        const std::string item_id = Str(ip, "id");
        if (!item_id.empty() && item_id != Str(Item(*s), "id")) {
            return Invalid("items[0][id]", "No such subscription item: '" + item_id + "'");
        }
        const std::string price_id = Str(ip, "price");
        if (!price_id.empty()) {
            new_price = Find("price", price_id);
            if (new_price == nullptr) return Invalid("items[0][price]", "No such price: '" + price_id + "'");
            // Stripe refuses a move to an inactive price; a subscription already on one keeps it (grandfathered).
            if (!new_price->at("active").as_bool() && price_id != Str(Item(*s).at("price").as_object(), "id")) {
                return Invalid("items[0][price]", kInactivePrice);
            }
        }
        if (Has(ip, "quantity")) {
            const auto q = Int(Str(ip, "quantity"));
            if (!q || *q < 1) return Invalid("items[0][quantity]", "Invalid integer: " + Str(ip, "quantity"));
            new_quantity = *q;
        }
    }
    const std::string pm = Str(params, "default_payment_method");
    if (!pm.empty()) {
        const bj::object* method = Find("payment_method", pm);
        if (method == nullptr || Str(*method, "customer") != customer_id) {
            return Invalid("default_payment_method", "The customer does not have a payment method with the ID " + pm + ".");
        }
    }
    std::optional<bj::value> pause;
    if (const auto* pc = params.if_contains("pause_collection")) {
        if (pc->is_string() && pc->get_string().empty()) {
            pause = bj::value(nullptr);
        } else {
            const std::string behavior = pc->is_object() ? Str(pc->get_object(), "behavior") : "";
            if (behavior != "keep_as_draft" && behavior != "mark_uncollectible" && behavior != "void") {
                return Invalid("pause_collection[behavior]", "Invalid value: must be one of keep_as_draft, "
                                                             "mark_uncollectible or void");
            }
            bj::value resumes_at(nullptr);
            if (Has(pc->get_object(), "resumes_at")) {
                const auto r = Int(Str(pc->get_object(), "resumes_at"));
                if (!r || *r <= now) return Invalid("pause_collection[resumes_at]", "resumes_at must be in the future");
                resumes_at = *r;
            }
            pause = bj::object{{"behavior", behavior}, {"resumes_at", resumes_at}};
        }
    }

    bj::object previous;
    const bj::value old_items = s->at("items");
    const bj::object& current = Item(*s);
    const bool price_changed = new_price != nullptr && Str(*new_price, "id") != Str(current.at("price").as_object(), "id");
    if (price_changed || new_quantity != I64(current.at("quantity"))) {
        const bj::object price = price_changed ? *new_price : current.at("price").as_object();
        if (auto bad = ChangeItem(*s, price, new_quantity, proration_behavior, at, payment_behavior)) return *bad;
        previous["items"] = old_items;
    }
    if (Has(params, "cancel_at_period_end")) {
        const bool next = Str(params, "cancel_at_period_end") == "true";
        if (s->at("cancel_at_period_end").as_bool() != next) {
            previous["cancel_at_period_end"] = s->at("cancel_at_period_end");
            previous["cancel_at"] = s->at("cancel_at");
            (*s)["cancel_at_period_end"] = next;
            (*s)["cancel_at"] = next ? Item(*s).at("current_period_end") : bj::value(nullptr);
            (*s)["cancellation_details"].as_object()["reason"] = next ? bj::value("cancellation_requested") : nullptr;
        }
    }
    if (!pm.empty() && Str(*s, "default_payment_method") != pm) {
        previous["default_payment_method"] = s->at("default_payment_method");
        (*s)["default_payment_method"] = pm;
    }
    if (pause && s->at("pause_collection") != *pause) {
        previous["pause_collection"] = s->at("pause_collection");
        (*s)["pause_collection"] = *pause;
    }
    if (Has(params, "description")) {
        const std::string d = Str(params, "description");
        previous["description"] = s->at("description");
        (*s)["description"] = d.empty() ? bj::value(nullptr) : bj::value(d);
    }
    const bj::value old_metadata = (*s)["metadata"];
    if (auto bad = MergeMetadata(*s, params)) return *bad;
    if ((*s)["metadata"] != old_metadata) previous["metadata"] = old_metadata;
    if (!previous.empty()) Emit("customer.subscription.updated", *s, &previous, now);
    // trial_end=now ends the trial at once: the renewal runs now.
    if (Str(params, "trial_end") == "now" && Str(*s, "status") == "trialing") {
        Item(*s)["current_period_end"] = now;
        (*s)["trial_end"] = now;
        trial_notice_sent_.insert(id);
        RunDueTransitions(id, now);
    }
    return Json(200, *Find("subscription", id));
}

http::Response Sandbox::CancelSubscription(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"prorate", "invoice_now", "cancellation_details"})) return *bad;
    bj::object* s = Find("subscription", id);
    if (s == nullptr) return NoSuch("subscription", id);
    const std::string status = Str(*s, "status");
    if (status == "canceled" || status == "incomplete_expired") {
        return StripeError(400, "invalid_request_error", "", "This subscription is already canceled.");
    }
    const int64_t now = NowFor(Str(*s, "customer"));
    bj::array lines;
    if (Str(params, "prorate") == "true" && status != "trialing") {
        // Stripe credits the unused time of the current period.
        const bj::object& item = Item(*s);
        const bj::object& price = item.at("price").as_object();
        auto currency = Currency::Parse(Str(*s, "currency"));
        const Money amount(I64(price.at("unit_amount")) * I64(item.at("quantity")), *currency);
        auto unused = ProrateAmount(
            amount, Period{Timestamp(I64(item.at("current_period_start"))), Timestamp(I64(item.at("current_period_end")))},
            Timestamp(now));
        if (unused.ok() && unused->amount_minor() > 0) {
            lines.push_back(Line(LineTemplate(), NewId("il"), -unused->amount_minor(), Str(*s, "currency"),
                                 "Unused time on " + PriceLabel(price) + " after " + FormatRfc3339(Timestamp(now)), now,
                                 I64(item.at("current_period_end")), true, *s, price, I64(item.at("quantity"))));
        }
    }
    if (Str(params, "invoice_now") == "true" || !lines.empty()) {
        const std::string invoice_id = CreateInvoice(*s, "subscription_update", std::move(lines), now);
        CollectInvoice(invoice_id, now, false);
        s = Find("subscription", id);
    }
    if (const auto* details = params.if_contains("cancellation_details"); details && details->is_object()) {
        EndSubscription(*s, now, "cancellation_requested");
        auto& cd = (*s)["cancellation_details"].as_object();
        if (Has(details->get_object(), "comment")) cd["comment"] = Str(details->get_object(), "comment");
        if (Has(details->get_object(), "feedback")) cd["feedback"] = Str(details->get_object(), "feedback");
    } else {
        EndSubscription(*s, now, "cancellation_requested");
    }
    return Json(200, *s);
}

http::Response Sandbox::ResumeSubscription(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"billing_cycle_anchor", "proration_behavior", "proration_date"})) return *bad;
    bj::object* s = Find("subscription", id);
    if (s == nullptr) return NoSuch("subscription", id);
    if (Str(*s, "status") != "paused") {
        return StripeError(400, "invalid_request_error", "", "Only a paused subscription can be resumed.");
    }
    const std::string anchor_mode = Has(params, "billing_cycle_anchor") ? Str(params, "billing_cycle_anchor") : "now";
    if (anchor_mode != "now" && anchor_mode != "unchanged") {
        return Invalid("billing_cycle_anchor", "billing_cycle_anchor must be now or unchanged");
    }
    const int64_t now = NowFor(Str(*s, "customer"));
    bj::object& item = Item(*s);
    const BillingInterval interval = IntervalOf(item.at("price").as_object());
    bj::object previous{{"items", s->at("items")}};
    if (anchor_mode == "now") {
        (*s)["billing_cycle_anchor"] = now;
        item["current_period_start"] = now;
        item["current_period_end"] = NthBoundary(Timestamp(now), interval, 1)->unix_seconds();
    } else {
        const auto period = PeriodContaining(Timestamp(I64(s->at("billing_cycle_anchor"))), interval, Timestamp(now));
        item["current_period_start"] = now;
        item["current_period_end"] = period->end.unix_seconds();
    }
    SetStatus(*s, "active", previous);
    Emit("customer.subscription.resumed", *s, nullptr, now);
    Emit("customer.subscription.updated", *s, &previous, now);
    const std::string invoice_id = CreateInvoice(*s, "subscription_cycle", bj::array{PeriodLine(*s, "")}, now);
    CollectInvoice(invoice_id, now, false);
    return Json(200, *Find("subscription", id));
}

http::Response Sandbox::ListSubscriptionItems(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"subscription", "limit", "starting_after", "ending_before"})) return *bad;
    const std::string sub_id = Str(params, "subscription");
    if (sub_id.empty()) return Missing("subscription");
    const bj::object* s = Find("subscription", sub_id);
    if (s == nullptr) return Invalid("subscription", "No such subscription: '" + sub_id + "'");
    return Json(200, bj::object{{"object", "list"}, {"data", s->at("items").at("data")}, {"has_more", false},
                                {"url", "/v1/subscription_items"}});
}

http::Response Sandbox::RetrieveSubscriptionItem(const std::string& id) {
    auto it = item_subscription_.find(id);
    if (it == item_subscription_.end()) return NoSuch("subscription_item", id);
    return Json(200, Item(*Find("subscription", it->second)));
}

http::Response Sandbox::UpdateSubscriptionItem(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"price", "quantity", "proration_behavior", "proration_date", "payment_behavior",
                                        "metadata"})) {
        return *bad;
    }
    auto it = item_subscription_.find(id);
    if (it == item_subscription_.end()) return NoSuch("subscription_item", id);
    bj::object sub_params;
    bj::object item{{"id", id}};
    if (Has(params, "price")) item["price"] = params.at("price");
    if (Has(params, "quantity")) item["quantity"] = params.at("quantity");
    sub_params["items"] = bj::array{item};
    for (const char* key : {"proration_behavior", "proration_date", "payment_behavior"}) {
        if (Has(params, key)) sub_params[key] = params.at(key);
    }
    const std::string sub_id = it->second;
    http::Response r = UpdateSubscription(sub_id, sub_params);
    if (r.status != 200) return r;
    bj::object& stored = Item(*Find("subscription", sub_id));
    if (auto bad = MergeMetadata(stored, params)) return *bad;
    return Json(200, stored);
}

http::Response Sandbox::CreatePreviewInvoice(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"customer", "subscription", "subscription_details", "automatic_tax"})) return *bad;
    const std::string sub_id = Str(params, "subscription");
    if (sub_id.empty()) return Missing("subscription");
    const bj::object* found = Find("subscription", sub_id);
    if (found == nullptr) return Invalid("subscription", "No such subscription: '" + sub_id + "'");
    if (Has(params, "customer") && Str(params, "customer") != Str(*found, "customer")) {
        return Invalid("customer", "The subscription does not belong to this customer.");
    }
    bj::object s = *found;  // a scratch copy: a preview changes nothing
    const std::string status = Str(s, "status");
    if (!IsLive(status)) return Invalid("subscription", "The subscription is " + status + "; it has no upcoming invoice.");
    const int64_t now = NowFor(Str(s, "customer"));
    const bj::object& item = Item(s);
    const bj::object* price = &item.at("price").as_object();
    int64_t quantity = I64(item.at("quantity"));
    std::string behavior = "create_prorations";
    int64_t at = now;
    if (const auto* d = params.if_contains("subscription_details")) {
        if (!d->is_object()) return Invalid("subscription_details", "Invalid object");
        const bj::object& details = d->get_object();
        if (auto bad = OnlyParams(details, {"items", "proration_date", "proration_behavior"})) return *bad;
        if (Has(details, "proration_behavior")) behavior = Str(details, "proration_behavior");
        if (behavior != "create_prorations" && behavior != "always_invoice" && behavior != "none") {
            return Invalid("subscription_details[proration_behavior]", "Invalid proration_behavior");
        }
        if (Has(details, "proration_date")) {
            const auto date = Int(Str(details, "proration_date"));
            if (!date || *date < I64(item.at("current_period_start")) || *date >= I64(item.at("current_period_end"))) {
                return Invalid("subscription_details[proration_date]",
                               "proration_date must be within the subscription's current period.");
            }
            at = *date;
        }
        if (const auto* items = details.if_contains("items")) {
            if (!items->is_array() || items->get_array().size() != 1 || !items->get_array()[0].is_object()) {
                return Invalid("subscription_details[items]", "The sandbox supports exactly one subscription item.");
            }
            const bj::object& ip = items->get_array()[0].get_object();
            if (Has(ip, "price")) {
                price = Find("price", Str(ip, "price"));
                if (price == nullptr) {
                    return Invalid("subscription_details[items][0][price]", "No such price: '" + Str(ip, "price") + "'");
                }
                if (!price->at("recurring").is_object() || Str(*price, "currency") != Str(s, "currency")) {
                    return Invalid("subscription_details[items][0][price]",
                                   "The price must be recurring and in the subscription's currency.");
                }
            }
            if (Has(ip, "quantity")) {
                const auto q = Int(Str(ip, "quantity"));
                if (!q || *q < 1) return Invalid("subscription_details[items][0][quantity]", "Invalid integer");
                quantity = *q;
            }
        }
    }
    const bool changed = Str(*price, "id") != Str(item.at("price").as_object(), "id") || quantity != I64(item.at("quantity"));
    const bool interval_change = !(IntervalOf(*price) == IntervalOf(item.at("price").as_object()));
    bj::array lines;
    // Pending invoice items of this subscription come first, as on the real invoice.
    if (auto pending = pending_items_.find(sub_id); pending != pending_items_.end()) {
        for (const auto& ii_id : pending->second) lines.push_back(objects_.at(ii_id).at("line"));
    }
    if (changed && status != "trialing" && behavior != "none") {
        auto prorations = ProrationLines(s, *price, quantity, at);
        if (!prorations.ok()) return Invalid("subscription_details[proration_date]", prorations.error().message);
        for (auto& l : *prorations) lines.push_back(std::move(l));
    }
    bj::object& scratch_item = Item(s);
    scratch_item["price"] = *price;
    scratch_item["quantity"] = quantity;
    int64_t period_start = I64(scratch_item.at("current_period_end"));
    const bool immediate = changed && status != "trialing" && (interval_change || behavior == "always_invoice");
    if (!immediate) {
        // The next renewal invoice: the new period at the new price (unless the subscription ends first).
        if (!s.at("cancel_at_period_end").as_bool()) {
            const auto period = PeriodContaining(Timestamp(I64(s.at("billing_cycle_anchor"))), IntervalOf(*price),
                                                 Timestamp(period_start));
            if (period.ok()) {
                scratch_item["current_period_start"] = period->start.unix_seconds();
                scratch_item["current_period_end"] = period->end.unix_seconds();
                s["status"] = "active";
                lines.push_back(PeriodLine(s, ""));
            }
        }
    } else {
        period_start = at;
        if (interval_change && behavior == "none") {
            scratch_item["current_period_start"] = at;
            scratch_item["current_period_end"] = NthBoundary(Timestamp(at), IntervalOf(*price), 1)->unix_seconds();
            lines.push_back(PeriodLine(s, ""));
        }
    }
    const bj::object& customer = *Find("customer", Str(s, "customer"));
    bj::object inv = DraftInvoice(s, "upcoming_" + sub_id, std::move(lines), I64(customer.at("balance")));
    inv["created"] = period_start;
    inv["effective_at"] = nullptr;
    inv["period_start"] = immediate ? at : I64(Item(*found).at("current_period_start"));
    inv["period_end"] = immediate ? at : period_start;
    inv["billing_reason"] = immediate ? "subscription_update" : "upcoming";
    inv["next_payment_attempt"] = period_start;
    inv["hosted_invoice_url"] = nullptr;
    return Json(200, inv);
}

http::Response Sandbox::PayInvoiceRequest(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"payment_method", "off_session"})) return *bad;
    bj::object* inv = Find("invoice", id);
    if (inv == nullptr) return NoSuch("invoice", id);
    const std::string status = Str(*inv, "status");
    if (status == "paid") return StripeError(400, "invalid_request_error", "invoice_already_paid", "Invoice is already paid.");
    if (status != "open") {
        return StripeError(400, "invalid_request_error", "invoice_not_open",
                           "This invoice is " + status + "; only open invoices can be paid.");
    }
    std::string pm = Str(params, "payment_method");
    if (!pm.empty()) {
        auto attached = Attach(pm, Str(*inv, "customer"));
        if (auto* err = std::get_if<http::Response>(&attached)) return *err;
        pm = std::get<std::string>(attached);
    }
    const std::string customer_id = Str(*inv, "customer");
    const PaymentOutcome outcome = CollectInvoice(id, NowFor(customer_id), Str(params, "off_session") != "true", pm);
    if (outcome.kind != PaymentOutcome::Kind::kSucceeded) {
        if (outcome.kind == PaymentOutcome::Kind::kNoPaymentMethod) {
            return StripeError(400, "invalid_request_error", outcome.code, outcome.message);
        }
        return CardError(outcome.code, outcome.decline_code, outcome.message);
    }
    return Json(200, *Find("invoice", id));
}

std::optional<Sandbox::Transition> Sandbox::NextTransition(const bj::object& s) const {
    const std::string status = Str(s, "status");
    const std::string id = Str(s, "id");
    std::optional<Transition> next;
    // Candidates in Kind order: on a tie the earlier kind runs first.
    auto consider = [&next](Transition::Kind kind, int64_t at, std::string invoice_id = {}) {
        if (!next || at < next->at) next = Transition{kind, at, std::move(invoice_id)};
    };
    if (status == "trialing" && !trial_notice_sent_.count(id)) {
        // Stripe: trial_will_end three days before the trial ends, at once if fewer remain.
        consider(Transition::Kind::kTrialNotice,
                 std::max(I64(s.at("trial_start")), I64(s.at("trial_end")) - kTrialWillEndNoticeSeconds));
    }
    if (auto it = open_invoices_.find(id); it != open_invoices_.end()) {
        for (const auto& inv_id : it->second) {
            const bj::value& at = objects_.at(inv_id).at("next_payment_attempt");
            if (!at.is_null()) consider(Transition::Kind::kDunningRetry, I64(at), inv_id);
        }
    }
    if (status == "incomplete") consider(Transition::Kind::kIncompleteExpiry, I64(s.at("created")) + kIncompleteExpirySeconds);
    if (const auto* pc = s.if_contains("pause_collection"); pc && pc->is_object()) {
        if (const auto* r = pc->get_object().if_contains("resumes_at"); r && !r->is_null()) {
            consider(Transition::Kind::kCollectionResumes, I64(*r));
        }
    }
    if (IsLive(status)) consider(Transition::Kind::kPeriodEnd, I64(Item(s).at("current_period_end")));
    return next;
}

void Sandbox::RunTransition(bj::object& s, const Transition& t) {
    const int64_t at = t.at;
    switch (t.kind) {
        case Transition::Kind::kTrialNotice:
            trial_notice_sent_.insert(Str(s, "id"));
            Emit("customer.subscription.trial_will_end", s, nullptr, at);
            return;
        case Transition::Kind::kDunningRetry:
            CollectInvoice(t.invoice_id, at, false);
            return;
        case Transition::Kind::kIncompleteExpiry: {
            // An unpaid first invoice expires the subscription after 23 hours.
            bj::object previous;
            SetStatus(s, "incomplete_expired", previous);
            s["ended_at"] = at;
            if (bj::object* inv = Find("invoice", Str(s, "latest_invoice")); inv && Str(*inv, "status") == "open") {
                (*inv)["status"] = "void";
                (*inv)["amount_remaining"] = 0;
                (*inv)["status_transitions"].as_object()["voided_at"] = at;
                Emit("invoice.voided", *inv, nullptr, at);
            }
            Emit("customer.subscription.updated", s, &previous, at);
            return;
        }
        case Transition::Kind::kCollectionResumes: {
            bj::object previous{{"pause_collection", s.at("pause_collection")}};
            s["pause_collection"] = nullptr;
            Emit("customer.subscription.updated", s, &previous, at);
            return;
        }
        case Transition::Kind::kPeriodEnd:
            break;
    }
    // The period ends: cancel at period end, trial end, or renewal (in a schedule's next phase, if one starts).
    const int64_t period_end = at;
    bj::object previous{{"items", s.at("items")}};
    const bj::value schedule_before = s.at("schedule");
    StartSchedulePhase(s, period_end);
    if (s.at("schedule") != schedule_before) previous["schedule"] = schedule_before;
    bj::object& item = Item(s);
    if (s.at("cancel_at_period_end").as_bool()) {
        EndSubscription(s, period_end, "cancellation_requested");
        return;
    }
    if (Str(s, "status") == "trialing") {
        const std::string behavior = Str(s.at("trial_settings").at("end_behavior").as_object(), "missing_payment_method");
        if (DefaultPaymentMethod(s).empty() && behavior == "cancel") {
            EndSubscription(s, period_end, "cancellation_requested");
            return;
        }
        if (DefaultPaymentMethod(s).empty() && behavior == "pause") {
            SetStatus(s, "paused", previous);
            Emit("customer.subscription.paused", s, nullptr, period_end);
            Emit("customer.subscription.updated", s, &previous, period_end);
            return;
        }
        SetStatus(s, "active", previous);
    }
    // Renewal: the next period follows the billing cycle anchor (Stripe's month-end rule).
    const auto period =
        PeriodContaining(Timestamp(I64(s.at("billing_cycle_anchor"))), IntervalOf(item.at("price").as_object()),
                         Timestamp(period_end));
    item["current_period_start"] = period->start.unix_seconds();
    item["current_period_end"] = period->end.unix_seconds();
    Emit("customer.subscription.updated", s, &previous, period_end);
    const std::string invoice_id = CreateInvoice(s, "subscription_cycle", bj::array{PeriodLine(s, "")}, period_end);
    CollectInvoice(invoice_id, period_end, false);
}

void Sandbox::RunDueTransitions(const std::string& subscription_id, int64_t until) {
    for (int i = 0; i < kTransitionsPerCallMax; ++i) {
        bj::object& s = objects_.at(subscription_id);
        const auto due = NextTransition(s);
        if (!due || due->at > until) return;
        RunTransition(s, *due);
    }
}

http::Response Sandbox::AdvanceTestClock(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"frozen_time"})) return *bad;
    bj::object* clock = Find("test_helpers.test_clock", id);
    if (clock == nullptr) return NoSuch("test clock", id);
    if (!Has(params, "frozen_time")) return Missing("frozen_time");
    const auto target = Int(Str(params, "frozen_time"));
    const int64_t current = I64(clock->at("frozen_time"));
    if (!target || *target <= current) {
        return Invalid("frozen_time", "Cannot advance a test clock to a time earlier than or equal to its current frozen time.");
    }
    // Every transition of the clock's subscriptions runs in the order it would have happened: a min-heap of
    // (due, subscription), where an entry is re-checked against the subscription's current schedule when popped.
    using Due = std::pair<int64_t, std::string>;
    std::priority_queue<Due, std::vector<Due>, std::greater<>> heap;
    for (const auto& sub_id : order_["subscription"]) {
        const bj::object& s = objects_.at(sub_id);
        if (Str(s, "test_clock") != id) continue;
        if (auto due = NextTransition(s); due && due->at <= *target) heap.emplace(due->at, sub_id);
    }
    while (!heap.empty()) {
        auto [due, sub_id] = heap.top();
        heap.pop();
        bj::object& s = objects_.at(sub_id);
        const auto now_due = NextTransition(s);
        if (!now_due || now_due->at != due) {
            if (now_due && now_due->at <= *target) heap.emplace(now_due->at, sub_id);
            continue;
        }
        clock->at("frozen_time") = due;  // objects made by the transition see the clock at that instant
        RunTransition(s, *now_due);
        clock = Find("test_helpers.test_clock", id);
        if (auto next = NextTransition(objects_.at(sub_id)); next && next->at <= *target) {
            heap.emplace(next->at, sub_id);
        }
    }
    clock->at("frozen_time") = *target;
    clock->at("status") = "ready";
    return Json(200, *clock);
}

}  // namespace tally::sandbox
