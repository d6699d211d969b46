// Checkout and Customer Portal: the API sessions and the hosted pages their URLs open.
#include <algorithm>

#include "adapters/crypto.hpp"
#include "sandbox/sandbox.hpp"
#include "sandbox/sandbox_util.hpp"
#include "adapters/stripe/form_encoding.hpp"
#include "domain/money.hpp"
#include "domain/time.hpp"

namespace tally::sandbox {

using namespace detail;  // NOLINT(google-build-using-namespace): the sandbox's own helpers

namespace {

constexpr int64_t kCheckoutSessionLifetimeSeconds = int64_t{24} * 3600;  // Stripe: a Checkout Session expires after 24 h
constexpr size_t kCheckoutLineItemsMax = 20;                     // the sandbox's bound on line_items

std::string Html(const std::string& text) {
    std::string out;
    for (char c : text) {
        switch (c) {
            case '&': out += "&amp;"; break;
            case '<': out += "&lt;"; break;
            case '>': out += "&gt;"; break;
            case '"': out += "&quot;"; break;
            case '\'': out += "&#39;"; break;
            default: out.push_back(c);
        }
    }
    return out;
}

std::string Amount(int64_t minor, const std::string& currency) {
    auto cur = Currency::Parse(currency);
    if (!cur.ok()) return std::to_string(minor);
    std::string code = currency;
    std::transform(code.begin(), code.end(), code.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
    return Money(minor, *cur).ToDecimalString() + " " + code;
}

std::string Date(int64_t unix_seconds) { return FormatRfc3339(Timestamp(unix_seconds)).substr(0, 10); }

http::Response HtmlPage(int status, const std::string& title, const std::string& body) {
    const std::string html =
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + Html(title) +
        "</title><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>"
        "body{font-family:system-ui,sans-serif;background:#f6f8fa;margin:0;padding:2rem;color:#1a1f36}"
        "main{max-width:32rem;margin:auto;background:#fff;border-radius:8px;padding:2rem;box-shadow:0 1px 4px #0002}"
        "label{display:block;margin:.75rem 0 .25rem;font-size:.9rem}input,select{width:100%;padding:.5rem;"
        "box-sizing:border-box;font-size:1rem}button{margin-top:1rem;width:100%;padding:.7rem;font-size:1rem;"
        "background:#635bff;color:#fff;border:0;border-radius:6px;cursor:pointer}button.secondary{background:#fff;"
        "color:#635bff;border:1px solid #635bff}.error{color:#b00020;margin-top:1rem}.notice{color:#0a7d2c}"
        "table{width:100%;border-collapse:collapse}td{padding:.3rem 0}.muted{color:#697386;font-size:.85rem}"
        "section{border-top:1px solid #e3e8ee;margin-top:1.5rem;padding-top:1rem}</style></head><body><main>"
        "<p class=\"muted\">Stripe sandbox (Tally) &middot; test mode</p>" +
        body + "</main></body></html>";
    return http::Response{status, html, "text/html; charset=utf-8", {}};
}

http::Response Redirect(const std::string& location) {
    http::Response r{303, "", "text/plain", {}};
    r.headers.emplace_back("Location", location);
    return r;
}

/// The card fields of a hosted form; |prefix| names them apart when a page has several forms.
std::string CardFields() {
    return "<label for=\"card_number\">Card number</label>"
           "<input id=\"card_number\" name=\"card_number\" inputmode=\"numeric\" autocomplete=\"cc-number\" "
           "placeholder=\"4242 4242 4242 4242\" required>"
           "<label for=\"card_expiry\">Expiry (MM / YY)</label>"
           "<input id=\"card_expiry\" name=\"card_expiry\" autocomplete=\"cc-exp\" placeholder=\"12 / 34\" required>"
           "<label for=\"card_cvc\">CVC</label>"
           "<input id=\"card_cvc\" name=\"card_cvc\" inputmode=\"numeric\" autocomplete=\"cc-csc\" placeholder=\"123\" "
           "required>"
           "<label for=\"billing_name\">Name on card</label>"
           "<input id=\"billing_name\" name=\"billing_name\" autocomplete=\"cc-name\">";
}

/// Parses "MM / YY", "MM/YY" or "MM/YYYY" into (month, four-digit year).
std::optional<std::pair<int64_t, int64_t>> ParseExpiry(const std::string& text) {
    std::string digits;
    for (char c : text) {
        if (c >= '0' && c <= '9') digits.push_back(c);
    }
    if (digits.size() != 4 && digits.size() != 6) return std::nullopt;
    const auto month = Int(digits.substr(0, 2));
    auto year = Int(digits.substr(2));
    if (!month || !year || *month < 1 || *month > 12) return std::nullopt;
    if (*year < 100) *year += 2000;
    return std::make_pair(*month, *year);
}

}  // namespace

http::Response Sandbox::CreateCheckoutSession(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"mode", "line_items", "success_url", "cancel_url", "customer", "customer_email",
                                        "client_reference_id", "metadata", "subscription_data", "payment_intent_data",
                                        "allow_promotion_codes", "expires_at", "customer_creation", "locale",
                                        "payment_method_types", "billing_address_collection"})) {
        return *bad;
    }
    const std::string mode = Str(params, "mode");
    if (mode.empty()) return Missing("mode");
    if (mode != "payment" && mode != "subscription") {
        return Invalid("mode", "The sandbox supports mode=payment and mode=subscription.");
    }
    if (!Has(params, "success_url")) return Missing("success_url");
    const std::string customer_id = Str(params, "customer");
    if (!customer_id.empty() && Find("customer", customer_id) == nullptr) {
        return Invalid("customer", "No such customer: '" + customer_id + "'");
    }
    if (!customer_id.empty() && Has(params, "customer_email")) {
        return Invalid("customer_email", "You may only specify one of these parameters: customer, customer_email.");
    }
    const auto* items = params.if_contains("line_items");
    if (items == nullptr) return Missing("line_items");
    if (!items->is_array() || items->get_array().empty() || items->get_array().size() > kCheckoutLineItemsMax) {
        return Invalid("line_items", "line_items must be a non-empty array");
    }
    if (mode == "subscription" && items->get_array().size() != 1) {
        return Invalid("line_items", "The sandbox supports exactly one line item in subscription mode.");
    }
    bj::array lines;
    std::string currency;
    int64_t total = 0;
    for (size_t i = 0; i < items->get_array().size(); ++i) {
        const std::string param = "line_items[" + std::to_string(i) + "]";
        if (!items->get_array()[i].is_object()) return Invalid(param, "Invalid object");
        const bj::object& li = items->get_array()[i].get_object();
        std::string price_id = Str(li, "price");
        const auto* price_data = li.if_contains("price_data");
        if (!price_id.empty() && price_data != nullptr) {
            return Invalid(param, "You may only specify one of these parameters: price, price_data.");
        }
        if (price_data != nullptr) {
            // An inline price, as Stripe makes one: a price (and with product_data a product) of its own, inactive.
            if (!price_data->is_object()) return Invalid(param + "[price_data]", "Invalid object");
            if (auto bad = OnlyParams(price_data->get_object(),
                                      {"currency", "unit_amount", "product", "product_data", "recurring"})) {
                return *bad;
            }
            bj::object inline_params = price_data->get_object();
            inline_params["active"] = "false";
            http::Response created = CreatePrice(inline_params);
            if (created.status != 200) return created;
            price_id = std::string(bj::parse(created.body).at("id").as_string());
        }
        if (price_id.empty()) return Missing(param + "[price]");
        const bj::object* price = Find("price", price_id);
        if (price == nullptr) return Invalid(param + "[price]", "No such price: '" + price_id + "'");
        if (price_data == nullptr && !price->at("active").as_bool()) return Invalid(param + "[price]", kInactivePrice);
        const bool recurring = price->at("recurring").is_object();
        if (mode == "payment" && recurring) {
            return Invalid(param + "[price]", "You specified `payment` mode but passed a recurring price. Either switch "
                                              "to `subscription` mode or use only one-time prices.");
        }
        if (mode == "subscription" && !recurring) {
            return Invalid(param + "[price]", "You must specify at least one recurring price in `subscription` mode.");
        }
        const auto quantity = Has(li, "quantity") ? Int(Str(li, "quantity")) : std::optional<int64_t>(1);
        if (!quantity || *quantity < 1) return Invalid(param + "[quantity]", "Invalid integer");
        if (!currency.empty() && Str(*price, "currency") != currency) {
            return Invalid(param + "[price]", "All prices must be in the same currency.");
        }
        currency = Str(*price, "currency");
        total += I64(price->at("unit_amount")) * *quantity;
        lines.push_back(bj::object{{"price", price_id}, {"quantity", *quantity}});
    }
    std::optional<int64_t> trial_days;
    bj::value subscription_metadata = bj::object();
    if (const auto* sd = params.if_contains("subscription_data")) {
        if (mode != "subscription") return Invalid("subscription_data", "subscription_data is only for subscription mode.");
        if (!sd->is_object()) return Invalid("subscription_data", "Invalid object");
        if (auto bad = OnlyParams(sd->get_object(), {"trial_period_days", "metadata", "description"})) return *bad;
        if (Has(sd->get_object(), "trial_period_days")) {
            trial_days = Int(Str(sd->get_object(), "trial_period_days"));
            if (!trial_days || *trial_days < 1 || *trial_days > 730) {
                return Invalid("subscription_data[trial_period_days]", "Invalid integer");
            }
        }
        if (const auto* md = sd->get_object().if_contains("metadata")) subscription_metadata = *md;
    }
    bj::value intent_metadata = bj::object();
    if (const auto* pid = params.if_contains("payment_intent_data")) {
        if (mode != "payment") return Invalid("payment_intent_data", "payment_intent_data is only for payment mode.");
        if (!pid->is_object()) return Invalid("payment_intent_data", "Invalid object");
        if (const auto* md = pid->get_object().if_contains("metadata")) intent_metadata = *md;
    }
    const int64_t now = customer_id.empty() ? config_.now() : NowFor(customer_id);
    bj::object cs = Template("checkout.session");
    const std::string id = "cs_test_" + Hex(24);
    cs["id"] = id;
    cs["mode"] = mode;
    cs["status"] = "open";
    cs["payment_status"] = "unpaid";
    cs["url"] = config_.public_url + "/checkout/" + id;
    cs["success_url"] = Str(params, "success_url");
    cs["cancel_url"] = Has(params, "cancel_url") ? bj::value(Str(params, "cancel_url")) : nullptr;
    cs["customer"] = customer_id.empty() ? bj::value(nullptr) : bj::value(customer_id);
    cs["customer_email"] = Has(params, "customer_email") ? bj::value(Str(params, "customer_email")) : nullptr;
    cs["customer_creation"] = customer_id.empty() ? bj::value("always") : bj::value(nullptr);
    cs["customer_details"] = nullptr;
    cs["client_reference_id"] = Has(params, "client_reference_id") ? bj::value(Str(params, "client_reference_id")) : nullptr;
    cs["currency"] = currency;
    cs["amount_subtotal"] = total;
    cs["amount_total"] = total;
    cs["total_details"] = bj::object{{"amount_discount", 0}, {"amount_shipping", 0}, {"amount_tax", 0}};
    cs["created"] = now;
    cs["expires_at"] = now + kCheckoutSessionLifetimeSeconds;
    cs["livemode"] = false;
    SetNull(cs, {"locale", "invoice", "payment_intent", "subscription", "setup_intent", "payment_link"});
    cs["payment_method_types"] = bj::array{"card"};
    cs["allow_promotion_codes"] = Str(params, "allow_promotion_codes") == "true" ? bj::value(true) : nullptr;
    cs["client_secret"] = nullptr;
    cs["ui_mode"] = "hosted";
    cs["recovered_from"] = nullptr;
    cs["metadata"] = bj::object();
    if (auto bad = MergeMetadata(cs, params)) return *bad;
    // Internal: what completing the session creates.
    cs["sandbox_subscription_data"] = bj::object{{"trial_period_days", trial_days ? bj::value(*trial_days) : nullptr},
                                                 {"metadata", subscription_metadata}};
    cs["sandbox_intent_metadata"] = intent_metadata;
    checkout_lines_[id] = lines;
    Put("checkout.session", cs);
    return Json(200, Public(objects_.at(id)));
}

bj::object Sandbox::Public(const bj::object& object) const {
    bj::object out = object;
    for (const char* internal : {"sandbox_subscription_data", "sandbox_intent_metadata", "line"}) out.erase(internal);
    return out;
}

http::Response Sandbox::ExpireCheckoutSession(const std::string& id) {
    bj::object* cs = Find("checkout.session", id);
    if (cs == nullptr) return NoSuch("checkout.session", id);
    if (Str(*cs, "status") != "open") {
        return StripeError(400, "invalid_request_error", "checkout_session_not_open",
                           "Only Checkout Sessions with a status of open can be expired.");
    }
    (*cs)["status"] = "expired";
    Emit("checkout.session.expired", Public(*cs), nullptr, config_.now());
    return Json(200, Public(*cs));
}

http::Response Sandbox::CheckoutPage(const std::string& id, const std::string& error) {
    bj::object* cs = Find("checkout.session", id);
    if (cs == nullptr) return HtmlPage(404, "Not found", "<h1>Checkout session not found</h1>");
    const std::string status = Str(*cs, "status");
    const std::string owner = Str(*cs, "customer");
    if (status == "open" && I64(cs->at("expires_at")) <= (owner.empty() ? config_.now() : NowFor(owner))) {
        (*cs)["status"] = "expired";
    }
    if (Str(*cs, "status") != "open") {
        return HtmlPage(410, "Checkout", "<h1 data-testid=\"session-status\">This checkout session is " +
                                         Html(Str(*cs, "status")) + ".</h1>");
    }
    std::string body = "<h1>Checkout</h1><table data-testid=\"line-items\">";
    for (const auto& li : checkout_lines_[id]) {
        const bj::object& price = *Find("price", Str(li.as_object(), "price"));
        const bj::object* product = Find("product", Str(price, "product"));
        const int64_t quantity = I64(li.at("quantity"));
        std::string per;
        if (price.at("recurring").is_object()) per = " / " + Str(price.at("recurring").as_object(), "interval");
        body += "<tr><td>" + Html(product ? Str(*product, "name") : Str(price, "id")) +
                (quantity > 1 ? " × " + std::to_string(quantity) : "") + "</td><td style=\"text-align:right\">" +
                Html(Amount(I64(price.at("unit_amount")) * quantity, Str(price, "currency"))) + per + "</td></tr>";
    }
    const auto& sd = cs->at("sandbox_subscription_data").as_object();
    const bool trial = !sd.at("trial_period_days").is_null();
    body += "</table><p data-testid=\"total\"><strong>Total due today: " +
            Html(Amount(trial ? 0 : I64(cs->at("amount_total")), Str(*cs, "currency"))) + "</strong>" +
            (trial ? " (" + std::to_string(I64(sd.at("trial_period_days"))) + "-day trial)" : "") + "</p>";
    body += "<form method=\"post\" action=\"/checkout/" + Html(id) + "\">";
    if (cs->at("customer").is_null()) {
        body += "<label for=\"email\">Email</label><input id=\"email\" name=\"email\" type=\"email\" required value=\"" +
                Html(Str(*cs, "customer_email")) + "\">";
    }
    body += CardFields();
    body += "<button type=\"submit\" data-testid=\"submit\">" +
            std::string(Str(*cs, "mode") == "subscription" ? (trial ? "Start trial" : "Subscribe") : "Pay") + "</button>";
    if (!error.empty()) body += "<p class=\"error\" role=\"alert\" data-testid=\"error\">" + Html(error) + "</p>";
    body += "</form>";
    if (!cs->at("cancel_url").is_null()) {
        body += "<p><a href=\"" + Html(Str(*cs, "cancel_url")) + "\" data-testid=\"cancel\">Cancel and return</a></p>";
    }
    return HtmlPage(error.empty() ? 200 : 402, "Checkout", body);
}

http::Response Sandbox::CompleteCheckout(const std::string& id, const bj::object& form) {
    bj::object* cs = Find("checkout.session", id);
    if (cs == nullptr || Str(*cs, "status") != "open") return CheckoutPage(id, "");
    std::string customer_id = Str(*cs, "customer");
    const std::string email = customer_id.empty() ? Str(form, "email") : "";
    if (customer_id.empty() && email.find('@') == std::string::npos) return CheckoutPage(id, "Enter a valid email address.");
    const auto expiry = ParseExpiry(Str(form, "card_expiry"));
    if (!expiry) return CheckoutPage(id, "Your card's expiration date is incomplete.");
    const int64_t now = customer_id.empty() ? config_.now() : NowFor(customer_id);
    const std::string today = FormatRfc3339(Timestamp(now));
    const int64_t year_now = *Int(today.substr(0, 4));
    const int64_t month_now = *Int(today.substr(5, 2));
    if (expiry->second < year_now || (expiry->second == year_now && expiry->first < month_now)) {
        return CheckoutPage(id, "Your card's expiration date is in the past.");
    }
    const std::string cvc = Str(form, "card_cvc");
    if (cvc.size() < 3 || cvc.size() > 4 || !std::all_of(cvc.begin(), cvc.end(), ::isdigit)) {
        return CheckoutPage(id, "Your card's security code is incomplete.");
    }
    const std::string name = Str(form, "billing_name");
    auto pm = NewCardPaymentMethod(Str(form, "card_number"), expiry->first, expiry->second, name, email);
    if (!pm.ok()) return CheckoutPage(id, pm.error().message);
    const bj::object sd = cs->at("sandbox_subscription_data").as_object();  // a copy: *cs changes below
    const bool trial = !sd.at("trial_period_days").is_null();
    // A card that will decline is refused on the page, before anything is created (as Stripe's page does).
    const PaymentOutcome predicted = PredictCharge(*pm, false);
    if (predicted.kind == PaymentOutcome::Kind::kDeclined && (!trial || cards_[*pm] == CardBehavior::kDeclines)) {
        return CheckoutPage(id, predicted.message);
    }
    if (customer_id.empty()) {
        http::Response created = CreateCustomer(bj::object{{"email", email}, {"name", name}});
        if (created.status != 200) return CheckoutPage(id, "Could not create the customer.");
        customer_id = std::string(bj::parse(created.body).at("id").as_string());
        cs = Find("checkout.session", id);
        (*cs)["customer"] = customer_id;
    }
    auto attached = Attach(*pm, customer_id);
    if (auto* err = std::get_if<http::Response>(&attached)) {
        return CheckoutPage(id, std::string(bj::parse(err->body).at("error").at("message").as_string()));
    }
    const bj::object& customer = *Find("customer", customer_id);
    (*cs)["customer_details"] = bj::object{
        {"address", nullptr}, {"email", customer.at("email")}, {"name", customer.at("name")}, {"phone", nullptr},
        {"tax_exempt", "none"}, {"tax_ids", bj::array()}, {"business_name", nullptr}, {"individual_name", nullptr}};
    const bj::array& lines = checkout_lines_[id];
    if (Str(*cs, "mode") == "subscription") {
        bj::object params{{"customer", customer_id},
                          {"items", bj::array{bj::object{{"price", lines[0].at("price")},
                                                         {"quantity", std::to_string(I64(lines[0].at("quantity")))}}}},
                          {"default_payment_method", *pm},
                          {"payment_behavior", "default_incomplete"},
                          {"metadata", sd.at("metadata")}};
        if (trial) params["trial_period_days"] = std::to_string(I64(sd.at("trial_period_days")));
        http::Response created = CreateSubscription(params);
        if (created.status != 200) return CheckoutPage(id, "Could not create the subscription.");
        const std::string sub_id(bj::parse(created.body).at("id").as_string());
        cs = Find("checkout.session", id);
        (*cs)["subscription"] = sub_id;
        const std::string invoice_id = Str(*Find("subscription", sub_id), "latest_invoice");
        (*cs)["invoice"] = invoice_id;
        const PaymentOutcome outcome = CollectInvoice(invoice_id, now, true);
        if (outcome.kind == PaymentOutcome::Kind::kRequiresAction && !outcome.payment_intent.empty()) {
            checkout_of_intent_[outcome.payment_intent] = id;
            return Redirect("/authenticate/" + outcome.payment_intent);
        }
        if (outcome.kind != PaymentOutcome::Kind::kSucceeded) return CheckoutPage(id, outcome.message);
        return FinishCheckout(*cs, now);
    }
    bj::object& pi = NewPaymentIntent(customer_id, I64(cs->at("amount_total")), Str(*cs, "currency"), "", now);
    pi["metadata"] = cs->at("sandbox_intent_metadata");
    (*cs)["payment_intent"] = pi.at("id");
    const PaymentOutcome outcome = ConfirmIntent(pi, *pm, false, now);
    if (outcome.kind == PaymentOutcome::Kind::kRequiresAction) {
        checkout_of_intent_[outcome.payment_intent] = id;
        return Redirect("/authenticate/" + outcome.payment_intent);
    }
    if (outcome.kind != PaymentOutcome::Kind::kSucceeded) return CheckoutPage(id, outcome.message);
    return FinishCheckout(*cs, now);
}

http::Response Sandbox::FinishCheckout(bj::object& cs, int64_t at) {
    cs["status"] = "complete";
    const bool trial = !cs.at("sandbox_subscription_data").at("trial_period_days").is_null();
    cs["payment_status"] = trial || I64(cs.at("amount_total")) == 0 ? "no_payment_required" : "paid";
    Emit("checkout.session.completed", Public(cs), nullptr, at);
    std::string url = Str(cs, "success_url");
    const std::string placeholder = "{CHECKOUT_SESSION_ID}";
    if (auto pos = url.find(placeholder); pos != std::string::npos) url.replace(pos, placeholder.size(), Str(cs, "id"));
    return Redirect(url);
}

http::Response Sandbox::AuthenticatePage(const std::string& pi_id) {
    const bj::object* pi = Find("payment_intent", pi_id);
    if (pi == nullptr || Str(*pi, "status") != "requires_action") {
        return HtmlPage(404, "3-D Secure", "<h1>No authentication is pending for this payment.</h1>");
    }
    return HtmlPage(200, "3-D Secure",
                "<h1>3-D Secure authentication</h1><p>Your bank asks you to confirm a payment of " +
                    Html(Amount(I64(pi->at("amount")), Str(*pi, "currency"))) +
                    ".</p><form method=\"post\" action=\"/authenticate/" + Html(pi_id) +
                    "\"><button name=\"action\" value=\"approve\" data-testid=\"approve\">Complete authentication</button>"
                    "<button class=\"secondary\" name=\"action\" value=\"fail\" data-testid=\"fail\">Fail authentication"
                    "</button></form>");
}

http::Response Sandbox::CreatePortalSession(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"customer", "return_url", "configuration", "locale", "flow_data"})) return *bad;
    const std::string customer_id = Str(params, "customer");
    if (customer_id.empty()) return Missing("customer");
    if (Find("customer", customer_id) == nullptr) return Invalid("customer", "No such customer: '" + customer_id + "'");
    if (Has(params, "flow_data")) return Invalid("flow_data", "The sandbox's portal does not support flow_data.");
    bj::object ps = Template("billing_portal.session");
    const std::string id = "bps_" + Hex(12);
    ps["id"] = id;
    ps["configuration"] = Has(params, "configuration") ? Str(params, "configuration") : "bpc_sandbox_default";
    ps["created"] = NowFor(customer_id);
    ps["customer"] = customer_id;
    ps["flow"] = nullptr;
    ps["livemode"] = false;
    ps["locale"] = Has(params, "locale") ? bj::value(Str(params, "locale")) : nullptr;
    ps["on_behalf_of"] = nullptr;
    ps["return_url"] = Has(params, "return_url") ? bj::value(Str(params, "return_url")) : nullptr;
    ps["url"] = config_.public_url + "/portal/" + id;
    Put("billing_portal.session", ps);
    return Json(200, ps);
}

http::Response Sandbox::PortalPage(const std::string& id, const std::string& notice) {
    const bj::object* ps = Find("billing_portal.session", id);
    if (ps == nullptr) return HtmlPage(404, "Not found", "<h1>Portal session not found</h1>");
    const std::string customer_id = Str(*ps, "customer");
    const bj::object& customer = *Find("customer", customer_id);
    std::string body = "<h1>Billing</h1><p data-testid=\"customer-email\">" + Html(Str(customer, "email")) + "</p>";
    if (!notice.empty()) body += "<p class=\"notice\" role=\"status\" data-testid=\"notice\">" + Html(notice) + "</p>";
    const std::string base = "/portal/" + id;
    for (const auto& sub_id : order_["subscription"]) {
        const bj::object& s = objects_.at(sub_id);
        const std::string status = Str(s, "status");
        if (Str(s, "customer") != customer_id || status == "canceled" || status == "incomplete_expired") continue;
        const bj::object& item = s.at("items").at("data").as_array()[0].as_object();
        const bj::object& price = item.at("price").as_object();
        const bj::object* product = Find("product", Str(price, "product"));
        body += "<section data-testid=\"subscription\" data-subscription=\"" + Html(sub_id) + "\"><h2>" +
                Html(product ? Str(*product, "name") : Str(price, "id")) + "</h2><p>" +
                Html(Amount(I64(price.at("unit_amount")) * I64(item.at("quantity")), Str(price, "currency"))) + " / " +
                Html(Str(price.at("recurring").as_object(), "interval")) + " &middot; <span data-testid=\"status\">" +
                Html(status) + "</span></p><p class=\"muted\">" +
                (s.at("cancel_at_period_end").as_bool() ? "Cancels on " : "Renews on ") +
                Date(I64(item.at("current_period_end"))) + "</p>";
        // Plans to switch to: active recurring prices in the subscription's currency.
        body += "<form method=\"post\" action=\"" + base + "/subscriptions/" + Html(sub_id) +
                "/update\"><label for=\"price-" + Html(sub_id) + "\">Change plan</label><select id=\"price-" +
                Html(sub_id) + "\" name=\"price\" data-testid=\"price-select\">";
        for (const auto& price_id : order_["price"]) {
            const bj::object& p = objects_.at(price_id);
            if (!p.at("active").as_bool() || !p.at("recurring").is_object() || Str(p, "currency") != Str(s, "currency")) {
                continue;
            }
            const bj::object* prod = Find("product", Str(p, "product"));
            const std::string label = (prod ? Str(*prod, "name") : price_id) + " — " +
                                      Amount(I64(p.at("unit_amount")), Str(p, "currency")) + " / " +
                                      Str(p.at("recurring").as_object(), "interval");
            body += "<option value=\"" + Html(price_id) + "\"" + (price_id == Str(price, "id") ? " selected" : "") +
                    " data-lookup-key=\"" + Html(Str(p, "lookup_key")) + "\">" + Html(label) + "</option>";
        }
        body += "</select><button type=\"submit\" data-testid=\"update-plan\">Update plan</button></form>";
        if (status == "paused") {
            body += "<form method=\"post\" action=\"" + base + "/subscriptions/" + Html(sub_id) +
                    "/resume\"><button type=\"submit\" data-testid=\"resume\">Resume subscription</button></form>";
        } else if (s.at("cancel_at_period_end").as_bool()) {
            body += "<form method=\"post\" action=\"" + base + "/subscriptions/" + Html(sub_id) +
                    "/renew\"><button type=\"submit\" data-testid=\"renew\">Renew plan</button></form>";
        } else {
            body += "<form method=\"post\" action=\"" + base + "/subscriptions/" + Html(sub_id) +
                    "/cancel\"><button class=\"secondary\" type=\"submit\" data-testid=\"cancel-plan\">Cancel plan"
                    "</button></form>";
        }
        body += "</section>";
    }
    const bj::object* pm = Find("payment_method", CustomerDefaultPaymentMethod(customer_id));
    if (pm == nullptr) {
        // Without a customer default, show the card of the newest subscription that has one.
        for (auto it = order_["subscription"].rbegin(); it != order_["subscription"].rend() && pm == nullptr; ++it) {
            const bj::object& s = objects_.at(*it);
            if (Str(s, "customer") == customer_id) pm = Find("payment_method", Str(s, "default_payment_method"));
        }
    }
    body += "<section><h2>Payment method</h2><p data-testid=\"card\">" +
            (pm ? Html(Str(pm->at("card").as_object(), "brand")) + " •••• " + Html(Str(pm->at("card").as_object(), "last4"))
                : std::string("No card on file")) +
            "</p><form method=\"post\" action=\"" + base + "/payment_method\">" + CardFields() +
            "<button type=\"submit\" data-testid=\"update-card\">Update payment method</button></form></section>";
    body += "<section><h2>Invoice history</h2><table data-testid=\"invoices\">";
    const auto& invoices = order_["invoice"];
    for (auto it = invoices.rbegin(); it != invoices.rend(); ++it) {
        const bj::object& inv = objects_.at(*it);
        if (Str(inv, "customer") != customer_id) continue;
        body += "<tr><td>" + Date(I64(inv.at("created"))) + "</td><td>" +
                Html(Amount(I64(inv.at("total")), Str(inv, "currency"))) + "</td><td>" + Html(Str(inv, "status")) +
                "</td></tr>";
    }
    body += "</table></section>";
    if (!ps->at("return_url").is_null()) {
        body += "<p><a href=\"" + Html(Str(*ps, "return_url")) + "\" data-testid=\"return\">Return</a></p>";
    }
    return HtmlPage(200, "Billing", body);
}

http::Response Sandbox::PortalAction(const std::string& id, const std::vector<std::string>& path, const bj::object& form) {
    const bj::object* ps = Find("billing_portal.session", id);
    if (ps == nullptr) return HtmlPage(404, "Not found", "<h1>Portal session not found</h1>");
    const std::string customer_id = Str(*ps, "customer");
    const std::string back = "/portal/" + id + "?notice=";
    auto error_text = [](const http::Response& r) {
        auto parsed = bj::parse(r.body);
        return std::string(parsed.at("error").at("message").as_string());
    };
    if (path.size() == 1 && path[0] == "payment_method") {
        const auto expiry = ParseExpiry(Str(form, "card_expiry"));
        if (!expiry) return PortalPage(id, "Your card's expiration date is incomplete.");
        auto pm = NewCardPaymentMethod(Str(form, "card_number"), expiry->first, expiry->second, Str(form, "billing_name"), "");
        if (!pm.ok()) return PortalPage(id, pm.error().message);
        auto attached = Attach(*pm, customer_id);
        if (auto* err = std::get_if<http::Response>(&attached)) return PortalPage(id, error_text(*err));
        http::Response updated =
            UpdateCustomer(customer_id, bj::object{{"invoice_settings", bj::object{{"default_payment_method", *pm}}}});
        if (updated.status != 200) return PortalPage(id, error_text(updated));
        // Subscriptions now charge the new default card; open invoices are retried with it at once.
        for (const auto& sub_id : order_["subscription"]) {
            bj::object& s = objects_.at(sub_id);
            if (Str(s, "customer") != customer_id || Str(s, "default_payment_method").empty()) continue;
            if (Str(s, "status") == "canceled" || Str(s, "status") == "incomplete_expired") continue;
            UpdateSubscription(sub_id, bj::object{{"default_payment_method", *pm}});
        }
        for (const auto& inv_id : std::vector<std::string>(order_["invoice"])) {
            const bj::object& inv = objects_.at(inv_id);
            if (Str(inv, "customer") == customer_id && Str(inv, "status") == "open") {
                CollectInvoice(inv_id, NowFor(customer_id), true);
            }
        }
        return Redirect(back + "Payment%20method%20updated");
    }
    if (path.size() != 3 || path[0] != "subscriptions") return HtmlPage(404, "Not found", "<h1>Not found</h1>");
    const std::string& sub_id = path[1];
    const bj::object* s = Find("subscription", sub_id);
    if (s == nullptr || Str(*s, "customer") != customer_id) return HtmlPage(404, "Not found", "<h1>Subscription not found</h1>");
    http::Response r;
    std::string done;
    if (path[2] == "update") {
        const std::string item_id = Str(s->at("items").at("data").as_array()[0].as_object(), "id");
        r = UpdateSubscription(sub_id, bj::object{{"items", bj::array{bj::object{{"id", item_id}, {"price", Str(form, "price")}}}},
                                                  {"proration_behavior", "create_prorations"}});
        done = "Plan%20updated";
    } else if (path[2] == "cancel") {
        r = UpdateSubscription(sub_id, bj::object{{"cancel_at_period_end", "true"}});
        done = "Subscription%20canceled";
    } else if (path[2] == "renew") {
        r = UpdateSubscription(sub_id, bj::object{{"cancel_at_period_end", "false"}});
        done = "Subscription%20renewed";
    } else if (path[2] == "resume") {
        r = ResumeSubscription(sub_id, bj::object());
        done = "Subscription%20resumed";
    } else {
        return HtmlPage(404, "Not found", "<h1>Not found</h1>");
    }
    if (r.status != 200) return PortalPage(id, error_text(r));
    return Redirect(back + done);
}

http::Response Sandbox::HostedPage(const http::Request& req) {
    const std::vector<std::string> seg = http::PathSegments(req.path);
    std::lock_guard lock(mu_);
    current_request_id_ = "req_" + Hex(7);
    current_idempotency_key_.clear();
    auto form = stripe::DecodeForm(req.method == "POST" ? std::string_view(req.body) : std::string_view());
    if (!form.ok()) return HtmlPage(400, "Bad request", "<h1>Malformed form</h1>");
    if (seg.size() == 2 && seg[0] == "checkout") {
        if (req.method == "GET") return CheckoutPage(seg[1], "");
        if (req.method == "POST") return CompleteCheckout(seg[1], *form);
    }
    if (seg.size() == 2 && seg[0] == "authenticate") {
        if (req.method == "GET") return AuthenticatePage(seg[1]);
        if (req.method == "POST") {
            const std::string& pi_id = seg[1];
            const PaymentOutcome outcome = Authenticate(pi_id, Str(*form, "action") == "approve");
            auto it = checkout_of_intent_.find(pi_id);
            if (it == checkout_of_intent_.end()) {
                return HtmlPage(200, "3-D Secure",
                                            outcome.kind == PaymentOutcome::Kind::kSucceeded
                                                ? "<h1 data-testid=\"auth-result\">Payment authenticated</h1>"
                                                : "<h1 data-testid=\"auth-result\">Authentication failed</h1>");
            }
            const std::string cs_id = it->second;
            checkout_of_intent_.erase(it);
            bj::object* cs = Find("checkout.session", cs_id);
            if (outcome.kind != PaymentOutcome::Kind::kSucceeded) return CheckoutPage(cs_id, outcome.message);
            return FinishCheckout(*cs, NowFor(Str(*cs, "customer")));
        }
    }
    if (seg.size() >= 2 && seg[0] == "portal") {
        if (seg.size() == 2 && req.method == "GET") {
            const size_t q = req.target.find('?');
            auto query = stripe::DecodeForm(q == std::string::npos ? std::string_view() : std::string_view(req.target).substr(q + 1));
            return PortalPage(seg[1], query.ok() ? Str(*query, "notice") : "");
        }
        if (seg.size() > 2 && req.method == "POST") {
            return PortalAction(seg[1], std::vector<std::string>(seg.begin() + 2, seg.end()), *form);
        }
    }
    return HtmlPage(404, "Not found", "<h1>Not found</h1>");
}

}  // namespace tally::sandbox
