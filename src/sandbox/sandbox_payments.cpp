// Payment methods with Stripe's test cards, payment intents, charges and refunds.
#include <algorithm>

#include "adapters/crypto.hpp"
#include "sandbox/sandbox.hpp"
#include "sandbox/sandbox_util.hpp"
#include "domain/money.hpp"

namespace tally::sandbox {

using namespace detail;  // NOLINT(google-build-using-namespace): the sandbox's own helpers

namespace {

constexpr int64_t kTestCardExpYear = 2034;  // expiry given to cards made from Stripe's test tokens

/// Stripe's test payment method tokens and the card each stands for.
struct TestToken {
    const char* id;
    const char* number;
};
constexpr TestToken kTestTokens[] = {
    {"pm_card_visa", "4242424242424242"},
    {"pm_card_mastercard", "5555555555554444"},
    {"pm_card_amex", "378282246310005"},
    {"pm_card_chargeDeclined", "4000000000000002"},
    {"pm_card_authenticationRequired", "4000002760003184"},
    {"pm_card_chargeCustomerFail", "4000000000000341"},
};

/// Luhn check over a digit string (card numbers).
bool LuhnValid(const std::string& digits) {
    if (digits.size() < 12 || digits.size() > 19) return false;
    int sum = 0;
    bool dbl = false;
    for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
        if (*it < '0' || *it > '9') return false;
        int d = *it - '0';
        if (dbl) d = d * 2 > 9 ? d * 2 - 9 : d * 2;
        sum += d;
        dbl = !dbl;
    }
    return sum % 10 == 0;
}

std::string Brand(const std::string& digits) {
    if (digits[0] == '4') return "visa";
    if (digits.rfind("34", 0) == 0 || digits.rfind("37", 0) == 0) return "amex";
    if (digits[0] == '5' && digits[1] >= '1' && digits[1] <= '5') return "mastercard";
    if (digits[0] == '2') return "mastercard";
    return "unknown";
}

}  // namespace

Result<std::string> Sandbox::NewCardPaymentMethod(const std::string& number, int64_t exp_month, int64_t exp_year,
                                                  const std::string& name, const std::string& email) {
    std::string digits;
    for (char c : number) {
        if (c != ' ' && c != '-') digits.push_back(c);
    }
    if (!LuhnValid(digits)) return InvalidArgument("Your card number is incorrect.", "card[number]");
    if (exp_month < 1 || exp_month > 12) return InvalidArgument("Your card's expiration month is invalid.", "card[exp_month]");
    if (exp_year < 1970 || exp_year > 9999) return InvalidArgument("Your card's expiration year is invalid.", "card[exp_year]");
    CardBehavior behavior = CardBehavior::kSucceeds;
    if (digits == "4000000000000002") behavior = CardBehavior::kDeclines;
    if (digits == "4000002760003184") behavior = CardBehavior::kRequiresAuthentication;
    if (digits == "4000000000000341") behavior = CardBehavior::kChargesFail;
    const std::string brand = Brand(digits);
    bj::object pm = Template("payment_method");
    const std::string id = NewId("pm");
    pm["id"] = id;
    pm["allow_redisplay"] = "unspecified";
    pm["billing_details"] = bj::object{
        {"address", bj::object{{"city", nullptr}, {"country", nullptr}, {"line1", nullptr}, {"line2", nullptr},
                               {"postal_code", nullptr}, {"state", nullptr}}},
        {"email", email.empty() ? bj::value(nullptr) : bj::value(email)},
        {"name", name.empty() ? bj::value(nullptr) : bj::value(name)},
        {"phone", nullptr},
        {"tax_id", nullptr}};
    bj::object card = pm.at("card").as_object();
    card["brand"] = brand;
    card["display_brand"] = brand;
    card["checks"] = bj::object{{"address_line1_check", nullptr}, {"address_postal_code_check", nullptr}, {"cvc_check", "pass"}};
    card["country"] = "US";
    card["exp_month"] = exp_month;
    card["exp_year"] = exp_year;
    card["fingerprint"] = Sha256Hex(digits).substr(0, 16);
    card["funding"] = "credit";
    card["generated_from"] = nullptr;
    card["last4"] = digits.substr(digits.size() - 4);
    card["networks"] = bj::object{{"available", bj::array{bj::value(brand)}}, {"preferred", nullptr}};
    card["three_d_secure_usage"] = bj::object{{"supported", true}};
    card["wallet"] = nullptr;
    card["regulated_status"] = "unregulated";
    pm["card"] = std::move(card);
    pm["created"] = config_.now();
    pm["customer"] = nullptr;
    pm["livemode"] = false;
    pm["metadata"] = bj::object();
    pm["type"] = "card";
    Put("payment_method", pm);
    cards_[id] = behavior;
    return id;
}

bj::object* Sandbox::ResolvePaymentMethod(const std::string& id) {
    if (bj::object* pm = Find("payment_method", id)) return pm;
    for (const auto& token : kTestTokens) {
        if (id != token.id) continue;
        auto created = NewCardPaymentMethod(token.number, 12, kTestCardExpYear, "", "");
        return created.ok() ? Find("payment_method", *created) : nullptr;
    }
    return nullptr;
}

std::variant<std::string, http::Response> Sandbox::Attach(const std::string& pm_id, const std::string& customer_id) {
    if (Find("customer", customer_id) == nullptr) return Invalid("customer", "No such customer: '" + customer_id + "'");
    bj::object* pm = ResolvePaymentMethod(pm_id);
    if (pm == nullptr) return NoSuch("PaymentMethod", pm_id);
    const std::string id = Str(*pm, "id");
    const std::string owner = Str(*pm, "customer");
    if (owner == customer_id) return id;
    if (!owner.empty()) {
        return Invalid("payment_method", "The payment method you provided has already been attached to a customer.");
    }
    // Attaching runs a verification: a card that declines cannot be attached (4000 0000 0000 0002); 0341 can.
    if (cards_[id] == CardBehavior::kDeclines) {
        return CardError("card_declined", "generic_decline", "Your card was declined.");
    }
    (*pm)["customer"] = customer_id;
    Emit("payment_method.attached", *pm, nullptr, NowFor(customer_id));
    return id;
}

http::Response Sandbox::CreatePaymentMethod(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"type", "card", "billing_details", "metadata", "allow_redisplay"})) return *bad;
    if (!Has(params, "type")) return Missing("type");
    if (Str(params, "type") != "card") return Invalid("type", "The sandbox supports type=card only.");
    const auto* card = params.if_contains("card");
    if (card == nullptr || !card->is_object()) return Missing("card");
    const bj::object& c = card->get_object();
    if (!Has(c, "number")) return Missing("card[number]");
    const auto month = Int(Str(c, "exp_month"));
    const auto year = Int(Str(c, "exp_year"));
    if (!month) return Missing("card[exp_month]");
    if (!year) return Missing("card[exp_year]");
    const int64_t full_year = *year < 100 ? 2000 + *year : *year;
    std::string name;
    std::string email;
    if (const auto* bd = params.if_contains("billing_details"); bd && bd->is_object()) {
        name = Str(bd->get_object(), "name");
        email = Str(bd->get_object(), "email");
    }
    auto created = NewCardPaymentMethod(Str(c, "number"), *month, full_year, name, email);
    if (!created.ok()) {
        const std::string code = created.error().param == "card[number]" ? "incorrect_number" : "invalid_expiry_year";
        return StripeError(402, "card_error", created.error().param == "card[exp_month]" ? "invalid_expiry_month" : code,
                           created.error().message, created.error().param);
    }
    bj::object& pm = *Find("payment_method", *created);
    if (auto bad = MergeMetadata(pm, params)) return *bad;
    return Json(200, pm);
}

http::Response Sandbox::AttachPaymentMethod(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"customer"})) return *bad;
    if (!Has(params, "customer")) return Missing("customer");
    auto attached = Attach(id, Str(params, "customer"));
    if (auto* err = std::get_if<http::Response>(&attached)) return *err;
    return Json(200, *Find("payment_method", std::get<std::string>(attached)));
}

http::Response Sandbox::DetachPaymentMethod(const std::string& id) {
    bj::object* pm = Find("payment_method", id);
    if (pm == nullptr) return NoSuch("PaymentMethod", id);
    const std::string customer_id = Str(*pm, "customer");
    if (customer_id.empty()) {
        return StripeError(400, "invalid_request_error", "", "The payment method " + id + " is not attached to a customer.");
    }
    if (bj::object* customer = Find("customer", customer_id)) {
        auto& settings = (*customer)["invoice_settings"].as_object();
        if (Str(settings, "default_payment_method") == id) settings["default_payment_method"] = nullptr;
    }
    bj::object previous{{"customer", customer_id}};
    (*pm)["customer"] = nullptr;
    Emit("payment_method.detached", *pm, &previous, NowFor(customer_id));
    return Json(200, *pm);
}

Sandbox::PaymentOutcome Sandbox::PredictCharge(const std::string& pm_id, bool off_session) const {
    PaymentOutcome outcome;
    auto it = cards_.find(pm_id);
    if (pm_id.empty() || it == cards_.end()) {
        outcome.kind = PaymentOutcome::Kind::kNoPaymentMethod;
        outcome.code = "payment_method_missing";
        outcome.message = "There is no payment method to charge.";
        return outcome;
    }
    switch (it->second) {
        case CardBehavior::kSucceeds:
            break;
        case CardBehavior::kDeclines:
        case CardBehavior::kChargesFail:
            outcome.kind = PaymentOutcome::Kind::kDeclined;
            outcome.code = "card_declined";
            outcome.decline_code = "generic_decline";
            outcome.message = "Your card was declined.";
            break;
        case CardBehavior::kRequiresAuthentication:
            outcome.kind = PaymentOutcome::Kind::kRequiresAction;
            outcome.code = off_session ? "authentication_required" : "payment_intent_authentication_failure";
            outcome.decline_code = off_session ? "authentication_required" : "";
            outcome.message = off_session ? "Your card was declined. This transaction requires authentication."
                                          : "The payment requires 3-D Secure authentication.";
            break;
    }
    return outcome;
}

bj::object& Sandbox::NewPaymentIntent(const std::string& customer, int64_t amount, const std::string& currency,
                                      const std::string& description, int64_t at) {
    bj::object pi = Template("payment_intent");
    const std::string id = NewId("pi");
    pi["id"] = id;
    pi["amount"] = amount;
    pi["amount_capturable"] = 0;
    pi["amount_received"] = 0;
    SetNull(pi, {"application", "application_fee_amount", "automatic_payment_methods", "canceled_at",
                 "cancellation_reason"});
    pi["capture_method"] = "automatic";
    pi["client_secret"] = id + "_secret_" + Hex(12);
    pi["confirmation_method"] = "automatic";
    pi["created"] = at;
    pi["currency"] = currency;
    pi["customer"] = customer.empty() ? bj::value(nullptr) : bj::value(customer);
    pi["description"] = description.empty() ? bj::value(nullptr) : bj::value(description);
    pi["last_payment_error"] = nullptr;
    pi["latest_charge"] = nullptr;
    pi["livemode"] = false;
    pi["metadata"] = bj::object();
    pi["next_action"] = nullptr;
    pi["payment_method"] = nullptr;
    pi["payment_method_types"] = bj::array{"card"};
    SetNull(pi, {"processing", "receipt_email", "setup_future_usage", "shipping"});
    pi["status"] = "requires_payment_method";
    pi["transfer_data"] = nullptr;
    Put("payment_intent", pi);
    bj::object& stored = objects_.at(id);
    Emit("payment_intent.created", stored, nullptr, at);
    return stored;
}

Sandbox::PaymentOutcome Sandbox::ConfirmIntent(bj::object& pi, const std::string& pm_id, bool off_session, int64_t at) {
    const std::string pi_id = Str(pi, "id");
    pi["payment_method"] = pm_id;
    PaymentOutcome outcome = PredictCharge(pm_id, off_session);
    outcome.payment_intent = pi_id;
    if (outcome.kind == PaymentOutcome::Kind::kRequiresAction && authenticated_.count(pi_id)) {
        outcome = PaymentOutcome{PaymentOutcome::Kind::kSucceeded, pi_id, "", "", ""};
    }
    if (outcome.kind == PaymentOutcome::Kind::kRequiresAction && !off_session) {
        // On session: the customer completes 3-D Secure on the sandbox's authentication page.
        pi["status"] = "requires_action";
        pi["next_action"] = bj::object{
            {"type", "redirect_to_url"},
            {"redirect_to_url", bj::object{{"url", config_.public_url + "/authenticate/" + pi_id}, {"return_url", nullptr}}}};
        Emit("payment_intent.requires_action", pi, nullptr, at);
        return outcome;
    }
    // A charge records the attempt, successful or not.
    const bj::object* pm = Find("payment_method", pm_id);
    bj::object ch = Template("charge");
    const std::string ch_id = NewId("ch");
    const bool ok = outcome.kind == PaymentOutcome::Kind::kSucceeded;
    const int64_t amount = I64(pi.at("amount"));
    ch["id"] = ch_id;
    ch["amount"] = amount;
    ch["amount_captured"] = ok ? amount : 0;
    ch["amount_refunded"] = 0;
    SetNull(ch, {"application", "application_fee", "application_fee_amount"});
    ch["balance_transaction"] = ok ? bj::value("txn_" + Hex(12)) : bj::value(nullptr);
    ch["billing_details"] = pm ? pm->at("billing_details") : bj::value(nullptr);
    ch["calculated_statement_descriptor"] = "TALLY SANDBOX";
    ch["captured"] = ok;
    ch["created"] = at;
    ch["currency"] = pi.at("currency");
    ch["customer"] = pi.at("customer");
    ch["description"] = pi.at("description");
    ch["disputed"] = false;
    ch["failure_code"] = ok ? bj::value(nullptr) : bj::value(outcome.code);
    ch["failure_message"] = ok ? bj::value(nullptr) : bj::value(outcome.message);
    ch["fraud_details"] = bj::object();
    ch["livemode"] = false;
    ch["metadata"] = pi.at("metadata");
    ch["outcome"] = bj::object{{"advice_code", nullptr},
                               {"network_advice_code", nullptr},
                               {"network_decline_code", nullptr},
                               {"network_status", ok ? "approved_by_network" : "declined_by_network"},
                               {"reason", ok ? bj::value(nullptr) : bj::value(outcome.decline_code)},
                               {"risk_level", "normal"},
                               {"seller_message", ok ? "Payment complete." : "The bank did not return any further details."},
                               {"type", ok ? "authorized" : "issuer_declined"}};
    ch["paid"] = ok;
    ch["payment_intent"] = pi_id;
    ch["payment_method"] = pm_id;
    bj::object details = fixtures_.at("charge").at("payment_method_details").as_object();
    if (pm != nullptr) {
        bj::object card = details.at("card").as_object();
        for (const char* key : {"brand", "checks", "country", "exp_month", "exp_year", "fingerprint", "funding", "last4"}) {
            card[key] = pm->at("card").at(key);
        }
        details["card"] = std::move(card);
    }
    details["type"] = "card";
    ch["payment_method_details"] = std::move(details);
    ch["receipt_email"] = nullptr;
    ch["receipt_number"] = nullptr;
    ch["receipt_url"] = config_.public_url + "/receipts/" + ch_id;
    ch["refunded"] = false;
    ch["refunds"] = bj::object{{"object", "list"}, {"data", bj::array()}, {"has_more", false},
                               {"url", "/v1/charges/" + ch_id + "/refunds"}};
    SetNull(ch, {"review", "shipping", "source", "source_transfer"});
    ch["status"] = ok ? "succeeded" : "failed";
    ch["transfer_data"] = nullptr;
    ch["transfer_group"] = nullptr;
    Put("charge", ch);
    pi["latest_charge"] = ch_id;
    pi["next_action"] = nullptr;
    if (ok) {
        pi["status"] = "succeeded";
        pi["amount_received"] = amount;
        pi["last_payment_error"] = nullptr;
        Emit("charge.succeeded", objects_.at(ch_id), nullptr, at);
        Emit("payment_intent.succeeded", pi, nullptr, at);
    } else {
        pi["status"] = "requires_payment_method";
        pi["last_payment_error"] = bj::object{{"type", "card_error"},
                                              {"code", outcome.code},
                                              {"decline_code", outcome.decline_code},
                                              {"message", outcome.message},
                                              {"charge", ch_id},
                                              {"payment_method", pm ? bj::value(*pm) : bj::value(nullptr)}};
        Emit("charge.failed", objects_.at(ch_id), nullptr, at);
        Emit("payment_intent.payment_failed", pi, nullptr, at);
    }
    return outcome;
}

Sandbox::PaymentOutcome Sandbox::Authenticate(const std::string& pi_id, bool approve) {
    bj::object* pi = Find("payment_intent", pi_id);
    PaymentOutcome outcome{PaymentOutcome::Kind::kDeclined, pi_id, "payment_intent_authentication_failure", "",
                           "The provided payment method has failed authentication."};
    if (pi == nullptr || Str(*pi, "status") != "requires_action") return outcome;
    const int64_t at = NowFor(Str(*pi, "customer"));
    if (approve) {
        authenticated_.insert(pi_id);
        outcome = ConfirmIntent(*pi, Str(*pi, "payment_method"), false, at);
    } else {
        (*pi)["status"] = "requires_payment_method";
        (*pi)["next_action"] = nullptr;
        (*pi)["last_payment_error"] = bj::object{{"type", "card_error"},
                                                 {"code", outcome.code},
                                                 {"message", outcome.message}};
        Emit("payment_intent.payment_failed", *pi, nullptr, at);
    }
    if (auto it = intent_invoice_.find(pi_id); it != intent_invoice_.end()) ApplyInvoiceOutcome(it->second, outcome, at);
    return outcome;
}

http::Response Sandbox::CreatePaymentIntent(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"amount", "currency", "customer", "payment_method", "confirm", "off_session",
                                        "description", "metadata", "payment_method_types", "automatic_payment_methods",
                                        "receipt_email", "setup_future_usage", "return_url", "capture_method"})) {
        return *bad;
    }
    if (!Has(params, "amount")) return Missing("amount");
    const auto amount = Int(Str(params, "amount"));
    if (!amount || *amount < 1) return Invalid("amount", "This value must be greater than or equal to 1.");
    if (!Has(params, "currency")) return Missing("currency");
    auto currency = Currency::Parse(Str(params, "currency"));
    if (!currency.ok()) return Invalid("currency", "Invalid currency: " + Str(params, "currency"));
    if (Has(params, "capture_method") && Str(params, "capture_method") != "automatic") {
        return Invalid("capture_method", "The sandbox supports capture_method=automatic only.");
    }
    const std::string customer = Str(params, "customer");
    if (!customer.empty() && Find("customer", customer) == nullptr) {
        return Invalid("customer", "No such customer: '" + customer + "'");
    }
    std::string pm_id;
    if (Has(params, "payment_method")) {
        bj::object* pm = ResolvePaymentMethod(Str(params, "payment_method"));
        if (pm == nullptr) return Invalid("payment_method", "No such PaymentMethod: '" + Str(params, "payment_method") + "'");
        if (!Str(*pm, "customer").empty() && Str(*pm, "customer") != customer) {
            return Invalid("payment_method", "The provided PaymentMethod belongs to another customer.");
        }
        pm_id = Str(*pm, "id");
    }
    const bool confirm = Str(params, "confirm") == "true";
    if (confirm && pm_id.empty()) return Missing("payment_method");
    const int64_t at = customer.empty() ? config_.now() : NowFor(customer);
    bj::object& pi = NewPaymentIntent(customer, *amount, currency->code(), Str(params, "description"), at);
    if (auto bad = MergeMetadata(pi, params)) return *bad;
    if (Has(params, "receipt_email")) pi["receipt_email"] = Str(params, "receipt_email");
    if (!pm_id.empty()) {
        pi["payment_method"] = pm_id;
        pi["status"] = "requires_confirmation";
    }
    if (!confirm) return Json(200, pi);
    const PaymentOutcome outcome = ConfirmIntent(pi, pm_id, Str(params, "off_session") == "true", at);
    if (outcome.kind == PaymentOutcome::Kind::kDeclined ||
        (outcome.kind == PaymentOutcome::Kind::kRequiresAction && Str(pi, "status") != "requires_action")) {
        return CardError(outcome.code, outcome.decline_code, outcome.message,
                         bj::object{{"payment_intent", pi}, {"charge", pi.at("latest_charge")}});
    }
    return Json(200, pi);
}

http::Response Sandbox::ConfirmPaymentIntent(const std::string& id, const bj::object& params) {
    if (auto bad = OnlyParams(params, {"payment_method", "off_session", "return_url"})) return *bad;
    bj::object* pi = Find("payment_intent", id);
    if (pi == nullptr) return NoSuch("payment_intent", id);
    const std::string status = Str(*pi, "status");
    if (status != "requires_payment_method" && status != "requires_confirmation" && status != "requires_action") {
        return StripeError(400, "invalid_request_error", "payment_intent_unexpected_state",
                           "You cannot confirm this PaymentIntent because it has a status of " + status + ".");
    }
    std::string pm_id = Str(*pi, "payment_method");
    if (Has(params, "payment_method")) {
        bj::object* pm = ResolvePaymentMethod(Str(params, "payment_method"));
        if (pm == nullptr) return Invalid("payment_method", "No such PaymentMethod: '" + Str(params, "payment_method") + "'");
        pm_id = Str(*pm, "id");
    }
    if (pm_id.empty()) return Missing("payment_method");
    const PaymentOutcome outcome =
        ConfirmIntent(*pi, pm_id, Str(params, "off_session") == "true", NowFor(Str(*pi, "customer")));
    if (outcome.kind == PaymentOutcome::Kind::kDeclined ||
        (outcome.kind == PaymentOutcome::Kind::kRequiresAction && Str(*pi, "status") != "requires_action")) {
        return CardError(outcome.code, outcome.decline_code, outcome.message,
                         bj::object{{"payment_intent", *pi}, {"charge", pi->at("latest_charge")}});
    }
    return Json(200, *pi);
}

http::Response Sandbox::CancelPaymentIntent(const std::string& id) {
    bj::object* pi = Find("payment_intent", id);
    if (pi == nullptr) return NoSuch("payment_intent", id);
    const std::string status = Str(*pi, "status");
    if (status == "succeeded" || status == "canceled") {
        return StripeError(400, "invalid_request_error", "payment_intent_unexpected_state",
                           "You cannot cancel this PaymentIntent because it has a status of " + status + ".");
    }
    const int64_t at = NowFor(Str(*pi, "customer"));
    (*pi)["status"] = "canceled";
    (*pi)["canceled_at"] = at;
    (*pi)["cancellation_reason"] = "requested_by_customer";
    Emit("payment_intent.canceled", *pi, nullptr, at);
    return Json(200, *pi);
}

http::Response Sandbox::CreateRefund(const bj::object& params) {
    if (auto bad = OnlyParams(params, {"charge", "payment_intent", "amount", "reason", "metadata"})) return *bad;
    std::string charge_id = Str(params, "charge");
    if (charge_id.empty() && Has(params, "payment_intent")) {
        const bj::object* pi = Find("payment_intent", Str(params, "payment_intent"));
        if (pi == nullptr) return Invalid("payment_intent", "No such payment_intent: '" + Str(params, "payment_intent") + "'");
        if (Str(*pi, "status") != "succeeded") {
            return Invalid("payment_intent", "This PaymentIntent does not have a successful charge to refund.");
        }
        charge_id = Str(*pi, "latest_charge");
    }
    if (charge_id.empty()) return Missing("charge");
    bj::object* ch = Find("charge", charge_id);
    if (ch == nullptr) return Invalid("charge", "No such charge: '" + charge_id + "'");
    if (Str(*ch, "status") != "succeeded") return Invalid("charge", "Only a successful charge can be refunded.");
    const int64_t refundable = I64(ch->at("amount")) - I64(ch->at("amount_refunded"));
    if (refundable == 0) {
        return StripeError(400, "invalid_request_error", "charge_already_refunded",
                           "Charge " + charge_id + " has already been refunded.");
    }
    int64_t amount = refundable;
    if (Has(params, "amount")) {
        const auto a = Int(Str(params, "amount"));
        if (!a || *a < 1) return Invalid("amount", "Invalid positive integer");
        if (*a > refundable) {
            return StripeError(400, "invalid_request_error", "amount_too_large",
                               "Refund amount (" + std::to_string(*a) + ") is greater than unrefunded amount on charge (" +
                                   std::to_string(refundable) + ")",
                               "amount");
        }
        amount = *a;
    }
    const std::string reason = Str(params, "reason");
    if (!reason.empty() && reason != "duplicate" && reason != "fraudulent" && reason != "requested_by_customer") {
        return Invalid("reason", "Invalid reason: must be one of duplicate, fraudulent or requested_by_customer");
    }
    const int64_t at = NowFor(Str(*ch, "customer"));
    bj::object refund = Template("refund");
    const std::string id = NewId("re");
    refund["id"] = id;
    refund["amount"] = amount;
    refund["balance_transaction"] = "txn_" + Hex(12);
    refund["charge"] = charge_id;
    refund["created"] = at;
    refund["currency"] = ch->at("currency");
    refund["destination_details"] = bj::object{{"type", "card"}, {"card", bj::object{{"reference_status", "pending"},
                                                                                     {"reference_type", "acquirer_reference_number"},
                                                                                     {"type", "refund"}}}};
    refund["metadata"] = bj::object();
    refund["payment_intent"] = ch->at("payment_intent");
    refund["payment_method"] = ch->at("payment_method");
    refund["customer"] = ch->at("customer");
    refund["reason"] = reason.empty() ? bj::value(nullptr) : bj::value(reason);
    refund["receipt_number"] = nullptr;
    refund["source_transfer_reversal"] = nullptr;
    refund["status"] = "succeeded";
    refund["transfer_reversal"] = nullptr;
    if (auto bad = MergeMetadata(refund, params)) return *bad;
    Put("refund", refund);
    bj::object previous{{"amount_refunded", ch->at("amount_refunded")}, {"refunded", ch->at("refunded")}};
    (*ch)["amount_refunded"] = I64(ch->at("amount_refunded")) + amount;
    (*ch)["refunded"] = I64(ch->at("amount_refunded")) == I64(ch->at("amount"));
    auto& refunds = (*ch)["refunds"].as_object();
    refunds["data"].as_array().insert(refunds["data"].as_array().begin(), objects_.at(id));
    Emit("refund.created", objects_.at(id), nullptr, at);
    Emit("charge.refunded", *ch, &previous, at);
    return Json(200, objects_.at(id));
}

}  // namespace tally::sandbox
