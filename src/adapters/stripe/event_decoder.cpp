#include "adapters/stripe/event_decoder.hpp"

#include <boost/json/basic_parser_impl.hpp>

#include "adapters/config/json_util.hpp"

namespace tally {
namespace {

namespace bj = boost::json;
using json::IdOrExpanded;
using json::OptionalBool;
using json::OptionalInt;
using json::OptionalString;
using json::RequiredInt;
using json::RequiredString;

constexpr const char* kObj = "data.object";

Result<EventEnvelope> Envelope(const bj::object& root) {
    TALLY_ASSIGN_OR_RETURN(std::string id, RequiredString(root, "id", ""));
    TALLY_ASSIGN_OR_RETURN(std::string type, RequiredString(root, "type", ""));
    TALLY_ASSIGN_OR_RETURN(int64_t created, RequiredInt(root, "created", ""));
    TALLY_ASSIGN_OR_RETURN(std::string object, OptionalString(root, "object", ""));
    if (!object.empty() && object != "event") return InvalidArgument("object must be \"event\"", "object");
    if (id.empty() || id.size() > 255) return InvalidArgument("id must be 1..255 characters", "id");
    if (type.empty() || type.size() > 255) return InvalidArgument("type must be 1..255 characters", "type");
    return EventEnvelope{StripeEventId(std::move(id)), std::move(type), Timestamp(created)};
}

// The envelope's four top-level fields, read by a SAX pass that builds no DOM: it runs on the acknowledgement
// path for every delivery, where a full parse of a 4 KB event cost as much as verifying its signature. It only
// answers when the event is well-formed JSON with each field present once and of the right type; anything else
// goes to the DOM path (Envelope above), which decides, so both give the same answer and the same errors.
class EnvelopeScanner {
  public:
    constexpr static std::size_t max_object_size = std::size_t(-1);
    constexpr static std::size_t max_array_size = std::size_t(-1);
    constexpr static std::size_t max_key_size = std::size_t(-1);
    constexpr static std::size_t max_string_size = std::size_t(-1);

    /// The envelope, or nullopt when the DOM path must decide.
    std::optional<EventEnvelope> Result() const {
        if (unsure_ || !root_is_object_ || !id_ || !type_ || !created_) return std::nullopt;
        if (object_ && *object_ != "event") return std::nullopt;
        if (id_->empty() || id_->size() > 255 || type_->empty() || type_->size() > 255) return std::nullopt;
        return EventEnvelope{StripeEventId(*id_), *type_, Timestamp(*created_)};
    }

    bool on_document_begin(bj::error_code&) { return true; }
    bool on_document_end(bj::error_code&) { return true; }
    bool on_object_begin(bj::error_code&) {
        if (depth_ == 0) root_is_object_ = true;
        return Open();
    }
    bool on_object_end(std::size_t, bj::error_code&) { return Close(); }
    bool on_array_begin(bj::error_code&) { return Open(); }
    bool on_array_end(std::size_t, bj::error_code&) { return Close(); }
    bool on_key_part(bj::string_view part, std::size_t, bj::error_code&) {
        if (depth_ == 1) key_.append(part.data(), part.size());
        return true;
    }
    bool on_key(bj::string_view part, std::size_t, bj::error_code&) {
        if (depth_ == 1) {
            key_.append(part.data(), part.size());
            field_ = key_ == "id"        ? Field::kId
                     : key_ == "type"    ? Field::kType
                     : key_ == "object"  ? Field::kObject
                     : key_ == "created" ? Field::kCreated
                                         : Field::kNone;
            key_.clear();
        }
        return true;
    }
    bool on_string_part(bj::string_view part, std::size_t, bj::error_code&) {
        if (depth_ == 1 && field_ != Field::kNone) string_.append(part.data(), part.size());
        return true;
    }
    bool on_string(bj::string_view part, std::size_t, bj::error_code&) {
        if (depth_ != 1 || field_ == Field::kNone) return true;
        string_.append(part.data(), part.size());
        TopLevelValue(Kind::kString);
        string_.clear();
        return true;
    }
    bool on_number_part(bj::string_view, bj::error_code&) { return true; }
    bool on_int64(int64_t v, bj::string_view, bj::error_code&) {
        if (depth_ == 1 && field_ == Field::kCreated) integer_ = v;
        TopLevelValue(depth_ == 1 && field_ == Field::kCreated ? Kind::kInteger : Kind::kOther);
        return true;
    }
    bool on_uint64(uint64_t v, bj::string_view, bj::error_code&) {
        const bool fits = v <= static_cast<uint64_t>(INT64_MAX);
        if (fits) integer_ = static_cast<int64_t>(v);
        TopLevelValue(fits && depth_ == 1 && field_ == Field::kCreated ? Kind::kInteger : Kind::kOther);
        return true;
    }
    bool on_double(double, bj::string_view, bj::error_code&) {
        TopLevelValue(Kind::kOther);
        return true;
    }
    bool on_bool(bool, bj::error_code&) {
        TopLevelValue(Kind::kOther);
        return true;
    }
    bool on_null(bj::error_code&) {
        TopLevelValue(Kind::kOther);
        return true;
    }
    bool on_comment_part(bj::string_view, bj::error_code&) { return true; }
    bool on_comment(bj::string_view, bj::error_code&) { return true; }

  private:
    enum class Field { kNone, kId, kType, kObject, kCreated };
    enum class Kind { kString, kInteger, kOther };

    // An object or array: a value of the field whose key came last, if it is at depth 1.
    bool Open() {
        TopLevelValue(Kind::kOther);
        ++depth_;
        return true;
    }
    bool Close() {
        --depth_;
        return true;
    }

    // A value starts at depth 1 (a member of the root object) under the last key seen.
    void TopLevelValue(Kind kind) {
        if (depth_ != 1 || field_ == Field::kNone) return;
        const Field field = field_;
        field_ = Field::kNone;
        auto take_string = [&](std::optional<std::string>& slot) {
            if (slot || kind != Kind::kString) unsure_ = true;  // a duplicate, or not a string
            slot = string_;
        };
        switch (field) {
            case Field::kId:
                take_string(id_);
                break;
            case Field::kType:
                take_string(type_);
                break;
            case Field::kObject:
                take_string(object_);
                break;
            case Field::kCreated:
                if (created_ || kind != Kind::kInteger) unsure_ = true;
                created_ = integer_;
                break;
            case Field::kNone:
                break;
        }
    }

    int depth_ = 0;
    bool root_is_object_ = false;
    bool unsure_ = false;
    Field field_ = Field::kNone;
    std::string key_;
    std::string string_;
    int64_t integer_ = 0;
    std::optional<std::string> id_, type_, object_;
    std::optional<int64_t> created_;
};

std::optional<EventEnvelope> ScanEnvelope(std::string_view payload) {
    bj::basic_parser<EnvelopeScanner> parser{bj::parse_options{}};
    bj::error_code ec;
    const size_t n = parser.write_some(false, payload.data(), payload.size(), ec);
    if (ec || n != payload.size()) return std::nullopt;
    return parser.handler().Result();
}

FieldMap Fields(const bj::object& o) {
    FieldMap out;
    for (const auto& kv : o) out.emplace(std::string(kv.key()), bj::serialize(kv.value()));
    return out;
}

std::optional<Timestamp> OptTs(const std::optional<int64_t>& v) {
    return v ? std::optional<Timestamp>(Timestamp(*v)) : std::nullopt;
}

Result<StripeCustomerData> DecodeCustomer(const bj::object& o) {
    StripeCustomerData c;
    TALLY_ASSIGN_OR_RETURN(std::string id, RequiredString(o, "id", kObj));
    c.id = StripeCustomerId(std::move(id));
    TALLY_ASSIGN_OR_RETURN(c.email, OptionalString(o, "email", kObj));
    TALLY_ASSIGN_OR_RETURN(c.name, OptionalString(o, "name", kObj));
    TALLY_ASSIGN_OR_RETURN(c.deleted, OptionalBool(o, "deleted", kObj, false));
    if (const auto* md = o.if_contains("metadata"); md && md->is_object()) {
        TALLY_ASSIGN_OR_RETURN(c.external_id, OptionalString(md->get_object(), "external_id", "data.object.metadata"));
    }
    return c;
}

/// A subscription schedule: phases with one item each are read; a phase with several items (not one Tally made)
/// is kept with an empty price, which PhaseChangeAt reports as a change Tally cannot name.
Result<StripeScheduleData> DecodeSchedule(const bj::object& o) {
    StripeScheduleData d;
    TALLY_ASSIGN_OR_RETURN(d.id, RequiredString(o, "id", kObj));
    TALLY_ASSIGN_OR_RETURN(d.status, RequiredString(o, "status", kObj));
    TALLY_ASSIGN_OR_RETURN(std::string sub, IdOrExpanded(o, "subscription", kObj));
    if (sub.empty()) {
        TALLY_ASSIGN_OR_RETURN(sub, OptionalString(o, "released_subscription", kObj));
    }
    d.subscription = StripeSubscriptionId(std::move(sub));
    TALLY_ASSIGN_OR_RETURN(auto created, OptionalInt(o, "created", kObj));
    d.created = Timestamp(created.value_or(0));
    const auto* phases = o.if_contains("phases");
    if (phases == nullptr || !phases->is_array()) return d;
    for (const auto& pv : phases->get_array()) {
        if (!pv.is_object()) return InvalidArgument("data.object.phases[] must be objects", "data.object.phases");
        const bj::object& p = pv.get_object();
        SchedulePhase phase;
        TALLY_ASSIGN_OR_RETURN(auto start, OptionalInt(p, "start_date", "data.object.phases[]"));
        TALLY_ASSIGN_OR_RETURN(auto end, OptionalInt(p, "end_date", "data.object.phases[]"));
        phase.start = Timestamp(start.value_or(0));
        phase.end = Timestamp(end.value_or(0));
        const auto* items = p.if_contains("items");
        if (items && items->is_array() && items->get_array().size() == 1 && items->get_array()[0].is_object()) {
            const bj::object& item = items->get_array()[0].get_object();
            TALLY_ASSIGN_OR_RETURN(phase.price_id, IdOrExpanded(item, "price", "data.object.phases[].items[]"));
            TALLY_ASSIGN_OR_RETURN(auto quantity, OptionalInt(item, "quantity", "data.object.phases[].items[]"));
            phase.quantity = quantity.value_or(1);
        }
        d.phases.push_back(std::move(phase));
    }
    return d;
}

Result<StripeSubscriptionData> DecodeSubscription(const bj::object& o) {
    StripeSubscriptionData s;
    TALLY_ASSIGN_OR_RETURN(std::string id, RequiredString(o, "id", kObj));
    s.id = StripeSubscriptionId(std::move(id));
    TALLY_ASSIGN_OR_RETURN(std::string customer, IdOrExpanded(o, "customer", kObj));
    if (customer.empty()) return MissingArgument("data.object.customer is required", "data.object.customer");
    s.customer = StripeCustomerId(std::move(customer));
    TALLY_ASSIGN_OR_RETURN(std::string status, RequiredString(o, "status", kObj));
    auto parsed = ParseSubscriptionStatus(status);
    if (!parsed.ok()) return InvalidArgument(parsed.error().message, "data.object.status");
    s.status = *parsed;
    TALLY_ASSIGN_OR_RETURN(s.cancel_at_period_end, OptionalBool(o, "cancel_at_period_end", kObj, false));
    TALLY_ASSIGN_OR_RETURN(auto trial_end, OptionalInt(o, "trial_end", kObj));
    s.trial_end = OptTs(trial_end);
    TALLY_ASSIGN_OR_RETURN(auto canceled_at, OptionalInt(o, "canceled_at", kObj));
    s.canceled_at = OptTs(canceled_at);
    TALLY_ASSIGN_OR_RETURN(auto created, OptionalInt(o, "created", kObj));
    s.created = Timestamp(created.value_or(0));
    // Older API versions carry the period on the subscription; current ones on each item.
    TALLY_ASSIGN_OR_RETURN(auto period_start, OptionalInt(o, "current_period_start", kObj));
    TALLY_ASSIGN_OR_RETURN(auto period_end, OptionalInt(o, "current_period_end", kObj));
    const auto* items = o.if_contains("items");
    if (items && items->is_object()) {
        const auto* data = items->get_object().if_contains("data");
        if (data && data->is_array() && !data->get_array().empty() && data->get_array()[0].is_object()) {
            const bj::object& item = data->get_array()[0].get_object();
            const std::string ipath = "data.object.items.data[0]";
            TALLY_ASSIGN_OR_RETURN(auto quantity, OptionalInt(item, "quantity", ipath));
            s.quantity = quantity.value_or(1);
            TALLY_ASSIGN_OR_RETURN(auto item_start, OptionalInt(item, "current_period_start", ipath));
            TALLY_ASSIGN_OR_RETURN(auto item_end, OptionalInt(item, "current_period_end", ipath));
            if (item_start) period_start = item_start;
            if (item_end) period_end = item_end;
            const auto* price = item.if_contains("price");
            if (price && price->is_object()) {
                const bj::object& p = price->get_object();
                const std::string ppath = ipath + ".price";
                TALLY_ASSIGN_OR_RETURN(s.price_id, RequiredString(p, "id", ppath));
                TALLY_ASSIGN_OR_RETURN(s.price_lookup_key, OptionalString(p, "lookup_key", ppath));
                TALLY_ASSIGN_OR_RETURN(s.currency, OptionalString(p, "currency", ppath));
                TALLY_ASSIGN_OR_RETURN(auto amount, OptionalInt(p, "unit_amount", ppath));
                s.unit_amount_minor = amount.value_or(0);
                const auto* recurring = p.if_contains("recurring");
                if (recurring && recurring->is_object()) {
                    TALLY_ASSIGN_OR_RETURN(std::string unit,
                                           OptionalString(recurring->get_object(), "interval", ppath + ".recurring"));
                    if (!unit.empty()) {
                        auto u = ParseIntervalUnit(unit);
                        if (!u.ok()) return InvalidArgument(u.error().message, ppath + ".recurring.interval");
                        s.interval.unit = *u;
                    }
                    TALLY_ASSIGN_OR_RETURN(auto count,
                                           OptionalInt(recurring->get_object(), "interval_count", ppath + ".recurring"));
                    s.interval.count = count.value_or(1);
                }
            }
        }
    }
    s.current_period_start = Timestamp(period_start.value_or(0));
    s.current_period_end = Timestamp(period_end.value_or(0));
    if (const auto* pause = o.if_contains("pause_collection"); pause && pause->is_object()) {
        TALLY_ASSIGN_OR_RETURN(s.pause_collection,
                               OptionalString(pause->get_object(), "behavior", "data.object.pause_collection"));
    }
    return s;
}

Result<StripeInvoiceData> DecodeInvoice(const bj::object& o) {
    StripeInvoiceData i;
    TALLY_ASSIGN_OR_RETURN(i.id, RequiredString(o, "id", kObj));
    TALLY_ASSIGN_OR_RETURN(std::string customer, IdOrExpanded(o, "customer", kObj));
    if (customer.empty()) return MissingArgument("data.object.customer is required", "data.object.customer");
    i.customer = StripeCustomerId(std::move(customer));
    TALLY_ASSIGN_OR_RETURN(i.subscription_id, IdOrExpanded(o, "subscription", kObj));
    if (i.subscription_id.empty()) {
        const auto* parent = o.if_contains("parent");
        if (parent && parent->is_object()) {
            const auto* details = parent->get_object().if_contains("subscription_details");
            if (details && details->is_object()) {
                TALLY_ASSIGN_OR_RETURN(i.subscription_id, IdOrExpanded(details->get_object(), "subscription",
                                                                       "data.object.parent.subscription_details"));
            }
        }
    }
    TALLY_ASSIGN_OR_RETURN(i.status, OptionalString(o, "status", kObj));
    TALLY_ASSIGN_OR_RETURN(auto due, OptionalInt(o, "amount_due", kObj));
    TALLY_ASSIGN_OR_RETURN(auto paid, OptionalInt(o, "amount_paid", kObj));
    i.amount_due_minor = due.value_or(0);
    i.amount_paid_minor = paid.value_or(0);
    TALLY_ASSIGN_OR_RETURN(i.currency, OptionalString(o, "currency", kObj));
    TALLY_ASSIGN_OR_RETURN(i.billing_reason, OptionalString(o, "billing_reason", kObj));
    TALLY_ASSIGN_OR_RETURN(auto attempts, OptionalInt(o, "attempt_count", kObj));
    i.attempt_count = attempts.value_or(0);
    TALLY_ASSIGN_OR_RETURN(auto next, OptionalInt(o, "next_payment_attempt", kObj));
    i.next_payment_attempt = OptTs(next);
    TALLY_ASSIGN_OR_RETURN(auto created, OptionalInt(o, "created", kObj));
    i.created = Timestamp(created.value_or(0));
    TALLY_ASSIGN_OR_RETURN(i.hosted_invoice_url, OptionalString(o, "hosted_invoice_url", kObj));
    TALLY_ASSIGN_OR_RETURN(i.number, OptionalString(o, "number", kObj));
    return i;
}

Result<StripeCheckoutData> DecodeCheckout(const bj::object& o) {
    StripeCheckoutData c;
    TALLY_ASSIGN_OR_RETURN(c.id, RequiredString(o, "id", kObj));
    TALLY_ASSIGN_OR_RETURN(std::string customer, IdOrExpanded(o, "customer", kObj));
    c.customer = StripeCustomerId(std::move(customer));
    TALLY_ASSIGN_OR_RETURN(c.subscription_id, IdOrExpanded(o, "subscription", kObj));
    TALLY_ASSIGN_OR_RETURN(c.client_reference_id, OptionalString(o, "client_reference_id", kObj));
    TALLY_ASSIGN_OR_RETURN(c.mode, OptionalString(o, "mode", kObj));
    TALLY_ASSIGN_OR_RETURN(c.payment_status, OptionalString(o, "payment_status", kObj));
    TALLY_ASSIGN_OR_RETURN(c.payment_intent, IdOrExpanded(o, "payment_intent", kObj));
    if (const auto* md = o.if_contains("metadata"); md && md->is_object()) {
        TALLY_ASSIGN_OR_RETURN(c.external_id, OptionalString(md->get_object(), "external_id", "data.object.metadata"));
        TALLY_ASSIGN_OR_RETURN(c.purchase, OptionalString(md->get_object(), "tally_purchase", "data.object.metadata"));
    }
    return c;
}

Result<StripePaymentData> DecodePayment(const bj::object& o, const std::string& object) {
    StripePaymentData p;
    p.object = object;
    TALLY_ASSIGN_OR_RETURN(p.id, RequiredString(o, "id", kObj));
    TALLY_ASSIGN_OR_RETURN(std::string customer, IdOrExpanded(o, "customer", kObj));
    p.customer = StripeCustomerId(std::move(customer));
    TALLY_ASSIGN_OR_RETURN(auto amount, OptionalInt(o, "amount", kObj));
    p.amount_minor = amount.value_or(0);
    TALLY_ASSIGN_OR_RETURN(auto refunded, OptionalInt(o, "amount_refunded", kObj));
    p.amount_refunded_minor = refunded.value_or(0);
    TALLY_ASSIGN_OR_RETURN(p.currency, OptionalString(o, "currency", kObj));
    TALLY_ASSIGN_OR_RETURN(p.status, OptionalString(o, "status", kObj));
    TALLY_ASSIGN_OR_RETURN(auto created, OptionalInt(o, "created", kObj));
    p.created = Timestamp(created.value_or(0));
    if (const auto* err = o.if_contains("last_payment_error"); err != nullptr && err->is_object()) {
        TALLY_ASSIGN_OR_RETURN(p.failure_message,
                               OptionalString(err->get_object(), "message", "data.object.last_payment_error"));
        TALLY_ASSIGN_OR_RETURN(p.failure_code, OptionalString(err->get_object(), "code", "data.object.last_payment_error"));
    } else {
        TALLY_ASSIGN_OR_RETURN(p.failure_message, OptionalString(o, "failure_message", kObj));
        TALLY_ASSIGN_OR_RETURN(p.failure_code, OptionalString(o, "failure_code", kObj));
    }
    if (object == "charge") {
        TALLY_ASSIGN_OR_RETURN(p.payment_intent, IdOrExpanded(o, "payment_intent", kObj));
    } else {
        p.payment_intent = p.id;
    }
    if (const auto* md = o.if_contains("metadata"); md && md->is_object()) {
        TALLY_ASSIGN_OR_RETURN(p.purchase, OptionalString(md->get_object(), "tally_purchase", "data.object.metadata"));
    }
    return p;
}

bool Handled(const std::string& type) {
    static const char* const kTypes[] = {
        "customer.created", "customer.updated", "customer.deleted",
        "customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted",
        "customer.subscription.paused", "customer.subscription.resumed", "customer.subscription.trial_will_end",
        "invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed",
        "invoice.payment_action_required", "checkout.session.completed", "checkout.session.expired",
        "payment_intent.succeeded",
        "payment_intent.payment_failed", "charge.refunded", "subscription_schedule.created",
        "subscription_schedule.updated", "subscription_schedule.released", "subscription_schedule.canceled",
        "subscription_schedule.completed", "subscription_schedule.aborted"};
    for (const char* t : kTypes) {
        if (type == t) return true;
    }
    return false;
}

}  // namespace

Result<EventEnvelope> StripeEventDecoder::DecodeEnvelope(std::string_view payload) const {
    if (auto envelope = ScanEnvelope(payload)) return std::move(*envelope);
    // Malformed or unusual: the DOM path names the error. Parse into a stack buffer (spilling to the heap only for
    // large events).
    unsigned char buffer[16 * 1024];
    bj::monotonic_resource resource(buffer, sizeof buffer);
    TALLY_ASSIGN_OR_RETURN(bj::value root, json::Parse(payload, &resource));
    TALLY_ASSIGN_OR_RETURN(const bj::object* obj, json::AsObject(root, ""));
    return Envelope(*obj);
}

Result<DecodedEvent> StripeEventDecoder::Decode(std::string_view payload) const {
    unsigned char buffer[16 * 1024];
    bj::monotonic_resource resource(buffer, sizeof buffer);
    TALLY_ASSIGN_OR_RETURN(bj::value root, json::Parse(payload, &resource));
    TALLY_ASSIGN_OR_RETURN(const bj::object* obj, json::AsObject(root, ""));
    TALLY_ASSIGN_OR_RETURN(EventEnvelope env, Envelope(*obj));
    DecodedEvent event;
    event.id = std::move(env.id);
    event.type = std::move(env.type);
    event.created = env.created;
    event.payload = payload;
    TALLY_ASSIGN_OR_RETURN(event.livemode, OptionalBool(*obj, "livemode", "", false));
    const auto* data = obj->if_contains("data");
    if (data == nullptr || !data->is_object()) {
        if (Handled(event.type)) return InvalidArgument("data must be an object", "data");
        return event;
    }
    const auto* object = data->get_object().if_contains("object");
    if (object == nullptr || !object->is_object()) {
        if (Handled(event.type)) return InvalidArgument("data.object must be an object", "data.object");
        return event;
    }
    const bj::object& o = object->get_object();
    TALLY_ASSIGN_OR_RETURN(event.object_type, OptionalString(o, "object", kObj));
    TALLY_ASSIGN_OR_RETURN(event.object_id, OptionalString(o, "id", kObj));
    if (!Handled(event.type)) return event;
    const std::string& t = event.type;
    if (t.starts_with("customer.subscription.")) {
        TALLY_ASSIGN_OR_RETURN(event.object, DecodeSubscription(o));
    } else if (t.starts_with("subscription_schedule.")) {
        TALLY_ASSIGN_OR_RETURN(event.object, DecodeSchedule(o));
    } else if (t.starts_with("customer.")) {
        TALLY_ASSIGN_OR_RETURN(StripeCustomerData c, DecodeCustomer(o));
        const auto* previous = data->get_object().if_contains("previous_attributes");
        if (t == "customer.updated" && previous != nullptr && previous->is_object()) {
            c.email_changed = previous->get_object().contains("email");
            c.name_changed = previous->get_object().contains("name");
        }
        event.object = std::move(c);
    } else if (t.starts_with("invoice.")) {
        TALLY_ASSIGN_OR_RETURN(event.object, DecodeInvoice(o));
    } else if (t.starts_with("checkout.session.")) {
        TALLY_ASSIGN_OR_RETURN(event.object, DecodeCheckout(o));
    } else if (t.starts_with("payment_intent.")) {
        TALLY_ASSIGN_OR_RETURN(event.object, DecodePayment(o, "payment_intent"));
    } else if (t.starts_with("charge.")) {
        TALLY_ASSIGN_OR_RETURN(event.object, DecodePayment(o, "charge"));
    }
    return event;
}

Result<std::pair<bool, bool>> StripeEventDecoder::ChainEvidence(std::string_view a, std::string_view b) const {
    TALLY_ASSIGN_OR_RETURN(bj::value root_a, json::Parse(a));
    TALLY_ASSIGN_OR_RETURN(bj::value root_b, json::Parse(b));
    // data.object and data.previous_attributes of one event; either may be absent.
    auto parts = [](const bj::value& root) {
        std::pair<const bj::object*, const bj::object*> out{nullptr, nullptr};
        const auto* data = root.is_object() ? root.get_object().if_contains("data") : nullptr;
        if (data == nullptr || !data->is_object()) return out;
        if (const auto* o = data->get_object().if_contains("object"); o && o->is_object()) out.first = &o->get_object();
        if (const auto* p = data->get_object().if_contains("previous_attributes"); p && p->is_object()) {
            out.second = &p->get_object();
        }
        return out;
    };
    // Serialises only the fields |later|'s previous_attributes name: whole-object serialisation was the
    // costliest part of ordering same-second events.
    auto follows = [](const bj::object* later_previous, const bj::object* earlier_object) {
        if (later_previous == nullptr || earlier_object == nullptr) return false;
        FieldMap previous = Fields(*later_previous);
        FieldMap earlier;
        for (const auto& [key, _] : previous) {
            if (const auto* v = earlier_object->if_contains(key)) earlier.emplace(key, bj::serialize(*v));
        }
        return FollowsFrom(previous, earlier);
    };
    const auto pa = parts(root_a);
    const auto pb = parts(root_b);
    return std::make_pair(follows(pa.second, pb.first), follows(pb.second, pa.first));
}

Result<StripeSubscriptionData> DecodeStripeSubscription(const boost::json::object& subscription) {
    return DecodeSubscription(subscription);
}

Result<StripeScheduleData> DecodeStripeSchedule(const boost::json::object& schedule) { return DecodeSchedule(schedule); }

Result<StripePaymentData> DecodeStripePaymentIntent(const boost::json::object& intent) {
    return DecodePayment(intent, "payment_intent");
}

Result<StripePaymentData> DecodeStripeCharge(const boost::json::object& charge) { return DecodePayment(charge, "charge"); }

}  // namespace tally
