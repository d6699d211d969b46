#pragma once
// Helpers for integration tests: temporary database files, a settable clock, Stripe event builders.
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <filesystem>
#include <string>

#include "app/ports.hpp"

namespace tally::testing {

/// A database path in a fresh temporary directory, removed with the object.
class TempDb {
public:
    TempDb() {
        static std::atomic<int> counter{0};
        dir_ = std::filesystem::temp_directory_path() /
               ("tally-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        std::filesystem::create_directories(dir_);
    }
    ~TempDb() { std::filesystem::remove_all(dir_); }
    std::string path() const { return (dir_ / "tally.db").string(); }

private:
    std::filesystem::path dir_;
};

/// A clock the test sets. Thread-safe.
class ManualClock final : public Clock {
public:
    explicit ManualClock(int64_t now) : now_(now) {}
    Timestamp Now() const override { return Timestamp(now_.load()); }
    void Set(int64_t now) { now_ = now; }
    void Advance(int64_t seconds) { now_ += seconds; }

private:
    std::atomic<int64_t> now_;
};

inline boost::json::object SubscriptionObject(const std::string& id, const std::string& customer,
                                              const std::string& status, const std::string& lookup_key,
                                              int64_t period_start, bool cancel_at_period_end = false) {
    namespace bj = boost::json;
    bj::object price{{"id", "price_" + lookup_key}, {"object", "price"}, {"lookup_key", lookup_key},
                     {"unit_amount", 6000}, {"currency", "usd"},
                     {"recurring", bj::object{{"interval", "month"}, {"interval_count", 1}}}};
    bj::object item{{"id", "si_" + id}, {"object", "subscription_item"}, {"price", price}, {"quantity", 1},
                    {"current_period_start", period_start}, {"current_period_end", period_start + 30 * 86400}};
    return bj::object{{"id", id},
                      {"object", "subscription"},
                      {"customer", customer},
                      {"status", status},
                      {"cancel_at_period_end", cancel_at_period_end},
                      {"created", period_start},
                      {"trial_end", nullptr},
                      {"canceled_at", nullptr},
                      {"items", bj::object{{"object", "list"}, {"data", bj::array{item}}}}};
}

inline std::string EventJson(const std::string& id, const std::string& type, int64_t created,
                             boost::json::object object, boost::json::object previous = {}) {
    namespace bj = boost::json;
    bj::object data{{"object", std::move(object)}};
    if (!previous.empty()) data["previous_attributes"] = std::move(previous);
    return bj::serialize(bj::object{{"id", id},
                                    {"object", "event"},
                                    {"api_version", "2025-03-31.basil"},
                                    {"created", created},
                                    {"livemode", false},
                                    {"pending_webhooks", 1},
                                    {"type", type},
                                    {"data", std::move(data)}});
}

inline boost::json::object InvoiceObject(const std::string& id, const std::string& customer,
                                         const std::string& subscription, const std::string& status) {
    return boost::json::object{{"id", id}, {"object", "invoice"}, {"customer", customer},
                               {"subscription", subscription}, {"status", status}, {"amount_due", 6000},
                               {"amount_paid", status == "paid" ? 6000 : 0}, {"currency", "usd"},
                               {"attempt_count", 1}};
}

/// A StripeApi whose every call is kUnavailable: tests derive from it and override the calls they exercise.
class UnreachableStripeApi : public StripeApi {
public:
    Result<StripeCustomerId> CreateCustomer(const std::string&, const std::string&, const std::string&,
                                            const std::string&) override {
        return Down();
    }
    Result<std::string> FindPriceId(const std::string&) override { return Down(); }
    Result<HostedSession> CreateCheckoutSession(const CheckoutSessionRequest&) override { return Down(); }
    Result<HostedSession> CreatePortalSession(const StripeCustomerId&, const std::string&) override { return Down(); }
    Result<std::pair<std::string, bool>> EnsurePrice(const StripePriceSpec&) override { return Down(); }
    Result<std::vector<std::string>> SyncPlan(const StripePlanSpec&) override { return Down(); }
    Status UpdateCustomerProfile(const StripeCustomerId&, const StripeCustomerProfile&) override { return Down(); }
    Result<Timestamp> SubscriptionNow(const StripeSubscriptionId&, Timestamp now) override { return now; }
    Result<std::string> DefaultPaymentMethod(const StripeCustomerId&) override { return Down(); }
    Result<StripeSubscriptionData> CreateSubscription(const StripeSubscriptionCreate&) override { return Down(); }
    Result<StripeSubscriptionData> RetrieveSubscription(const StripeSubscriptionId&) override { return Down(); }
    Result<StripePaymentData> CreatePaymentIntent(const StripePaymentIntentCreate&) override { return Down(); }
    Result<StripePaymentData> RefundPayment(const std::string&, int64_t, const std::string&) override { return Down(); }
    Result<StripePaymentData> RetrievePaymentIntent(const std::string&) override { return Down(); }
    Result<StripeSubscriptionData> UpdateSubscription(const StripeSubscriptionId&, const StripeSubscriptionUpdate&) override {
        return Down();
    }
    Result<StripeSubscriptionData> CancelSubscription(const StripeSubscriptionId&, bool, const std::string&) override {
        return Down();
    }
    Result<StripeInvoicePreview> PreviewSubscriptionChange(const StripeSubscriptionId&, const std::string&, int64_t,
                                                           const std::string&) override {
        return Down();
    }
    Result<StripeScheduleData> ScheduleSubscriptionChange(const StripeSubscriptionId&, const std::string&,
                                                          const SchedulePhase&, const SchedulePhase&,
                                                          const std::string&) override {
        return Down();
    }
    Result<StripeScheduleData> ReleaseSchedule(const std::string&, const std::string&) override { return Down(); }

protected:
    static Error Down() { return Unavailable("Stripe cannot be reached (not in this test)"); }
};

}  // namespace tally::testing
