#pragma once
// Inside the HTTP API: what a route handler is given (Call), the helpers handlers share, and the handlers of
// ApiRoutes(), grouped by the file that defines them. Handlers are thin: parse, call one use case, render.
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <optional>
#include <string>
#include <vector>

#include "adapters/http/api.hpp"

namespace tally::http {

/// The customer session a request was made with: it acts for |user| inside |customer| with the user's |role|,
/// read again on every request.
struct SessionScope {
    std::string session_id;
    CustomerId customer;
    std::string user;
    MemberRole role = MemberRole::kMember;
};

/// One authenticated (or public) request matched to a route.
struct Call {
    const Request& req;
    std::vector<std::string> params;  // the route template's {…} segments, in order
    IdempotencyRequest idem;          // empty key: not idempotent (and always for GET)
    std::string actor;                // for the audit log: the API key id, or "customer_session:<id> user=<user>"
    std::optional<SessionScope> session;  // set when the caller is a customer session

    const std::string& param(size_t i) const { return params.at(i); }
    bool read() const { return req.method == "GET" || req.method == "HEAD"; }
    /// The Stripe idempotency key derived from the caller's (scoped to its API key or session), or "".
    std::string StripeIdempotencyKey() const;
    /// For writes a session makes: kPermissionDenied unless its user's role may manage billing (owner, admin).
    Status MayManageBilling() const;
};

// Rendering.
Response Json(int status, const boost::json::value& v);
Response List(const boost::json::array& data, const std::string& url, bool has_more = false);
/// An idempotent mutation's outcome as a response: the stored one replayed (Idempotent-Replayed: true) or fresh.
Response Stored(const Result<IdempotentOutcome>& r);
StoredResponse Render(int status, const boost::json::value& v);
Response RouteNotFound(const Request& req);

// Parsing.
/// ?limit=: kListPageSizeDefault when absent, else 1..kListPageSizeMax.
Result<int> PageSize(const Request& req);
/// kInvalidArgument (kParameterUnknown) for the first query parameter not in |allowed|.
Status OnlyQueryParams(const Request& req, std::initializer_list<const char*> allowed);
/// An integer query parameter, or nullopt when absent; kInvalidArgument naming it otherwise.
Result<std::optional<int64_t>> IntQuery(const Request& req, const char* name);
/// A string field of |body| when present and not null; kInvalidArgument naming it when it is not a string.
Result<std::optional<std::string>> MaybeString(const boost::json::object& body, const char* key);
/// BindJsonBody where the whole body may be left out (an action with only optional parameters).
Result<boost::json::object> OptionalJsonBody(const Request& req, std::initializer_list<const char*> allowed);
/// An `interval` field: absent or null means "month"; an empty string is refused, not defaulted.
Result<std::string> IntervalParam(const boost::json::object& body);
Error NoSuchCustomer(const std::string& id, const std::string& param);
/// The API key |req| carries (a public route that shows more to a key): kUnauthenticated without a valid one.
Result<Principal> AuthenticateApiKey(const ApiDeps& d, const Request& req);

namespace routes {
// api.cpp: public routes.
Response Health(const ApiDeps& d, const Call& c);
Response Metrics(const ApiDeps& d, const Call& c);
void ReceiveStripeWebhook(const ApiDeps& d, Request&& req, const Responder& respond);
Response BillingReturn(const ApiDeps& d, const Call& c);
Response OpenApi(const ApiDeps& d, const Call& c);
Response Docs(const ApiDeps& d, const Call& c);
Response DocsScript(const ApiDeps& d, const Call& c);
Response DocsStyle(const ApiDeps& d, const Call& c);

// api_customers.cpp: customers, members, customer sessions, users, invoices and payments.
Response CreateCustomer(const ApiDeps& d, const Call& c);
Response ListCustomers(const ApiDeps& d, const Call& c);
Response GetCustomer(const ApiDeps& d, const Call& c);
Response UpdateCustomer(const ApiDeps& d, const Call& c);
Response GetEntitlements(const ApiDeps& d, const Call& c);
Response SetRoleOverride(const ApiDeps& d, const Call& c);
Response ClearRoleOverride(const ApiDeps& d, const Call& c);
Response ListMembers(const ApiDeps& d, const Call& c);
Response AddMember(const ApiDeps& d, const Call& c);
Response GetMember(const ApiDeps& d, const Call& c);
Response UpdateMember(const ApiDeps& d, const Call& c);
Response RemoveMember(const ApiDeps& d, const Call& c);
Response CreateCustomerSession(const ApiDeps& d, const Call& c);
Response RevokeCustomerSession(const ApiDeps& d, const Call& c);
Response GetUser(const ApiDeps& d, const Call& c);
Response ListInvoices(const ApiDeps& d, const Call& c);
Response ListPayments(const ApiDeps& d, const Call& c);
Response ListCustomerInvoices(const ApiDeps& d, const Call& c);
Response ListCustomerPayments(const ApiDeps& d, const Call& c);

// api_billing.cpp: plans, Checkout and Portal sessions, subscriptions.
Response ListPlans(const ApiDeps& d, const Call& c);
Response CreatePlan(const ApiDeps& d, const Call& c);
Response GetPlan(const ApiDeps& d, const Call& c);
Response UpdatePlan(const ApiDeps& d, const Call& c);
Response ArchivePlan(const ApiDeps& d, const Call& c);
Response CreateCheckoutSession(const ApiDeps& d, const Call& c);
Response CreatePortalSession(const ApiDeps& d, const Call& c);
Response CreateSubscription(const ApiDeps& d, const Call& c);
Response ListSubscriptions(const ApiDeps& d, const Call& c);
Response ListCustomerSubscriptions(const ApiDeps& d, const Call& c);
Response GetSubscription(const ApiDeps& d, const Call& c);
Response PreviewSubscriptionChange(const ApiDeps& d, const Call& c);
Response ChangeSubscription(const ApiDeps& d, const Call& c);
Response CancelSubscription(const ApiDeps& d, const Call& c);
Response ResumeSubscription(const ApiDeps& d, const Call& c);
Response PauseSubscription(const ApiDeps& d, const Call& c);
Response UnpauseSubscription(const ApiDeps& d, const Call& c);

// api_usage.cpp: usage limits.
void RecordUsage(const ApiDeps& d, const Call& c, const Responder& respond);
void RecordUsageBatch(const ApiDeps& d, const Call& c, const Responder& respond);
void CheckUsage(const ApiDeps& d, const Call& c, const Responder& respond);
Response GetUsage(const ApiDeps& d, const Call& c);
Response ListLimitOverrides(const ApiDeps& d, const Call& c);
Response SetLimitOverride(const ApiDeps& d, const Call& c);
Response ClearLimitOverride(const ApiDeps& d, const Call& c);
Response GetUsageHistory(const ApiDeps& d, const Call& c);

// api_credits.cpp
/// Answered once the deduction is durable: with a group committer, with the others of its group.
void DeductCredits(const ApiDeps& d, const Call& c, const Responder& respond);
Response GrantCredits(const ApiDeps& d, const Call& c);
Response GetCredits(const ApiDeps& d, const Call& c);
Response ListCreditGrants(const ApiDeps& d, const Call& c);
Response ListCreditTransactions(const ApiDeps& d, const Call& c);
void CreateCreditReservation(const ApiDeps& d, const Call& c, const Responder& respond);
Response GetCreditReservation(const ApiDeps& d, const Call& c);
Response CaptureCreditReservation(const ApiDeps& d, const Call& c);
Response ReleaseCreditReservation(const ApiDeps& d, const Call& c);
Response ReverseCreditTransfer(const ApiDeps& d, const Call& c);
Response ListNotifications(const ApiDeps& d, const Call& c);
Response DismissNotification(const ApiDeps& d, const Call& c);
Response GetNotificationPreferences(const ApiDeps& d, const Call& c);
Response SetNotificationPreferences(const ApiDeps& d, const Call& c);
Response ListCreditBundles(const ApiDeps& d, const Call& c);
Response CreateCreditPurchase(const ApiDeps& d, const Call& c);
Response CreateCreditCheckoutSession(const ApiDeps& d, const Call& c);
Response GetCreditPurchase(const ApiDeps& d, const Call& c);
Response ListCreditPurchases(const ApiDeps& d, const Call& c);
Response GetAutoPurchase(const ApiDeps& d, const Call& c);
Response SetAutoPurchase(const ApiDeps& d, const Call& c);
Response TriggerAutoPurchase(const ApiDeps& d, const Call& c);
Response RefundCreditPurchase(const ApiDeps& d, const Call& c);

// api_flags.cpp
Response ListFlags(const ApiDeps& d, const Call& c);
Response GetFlag(const ApiDeps& d, const Call& c);
Response UpdateFlag(const ApiDeps& d, const Call& c);
Response GetCustomerFlags(const ApiDeps& d, const Call& c);
/// POST /v1/check {customer, flag}.
Response CheckFlag(const ApiDeps& d, const CustomerId& customer, const std::string& flag);

// api_operations.cpp: API keys, the audit log, Stripe's webhook events, the app's webhook endpoints and events.
Response ListApiKeys(const ApiDeps& d, const Call& c);
Response CreateApiKey(const ApiDeps& d, const Call& c);
Response RevokeApiKey(const ApiDeps& d, const Call& c);
Response ListAudit(const ApiDeps& d, const Call& c);
Response ListWebhookEvents(const ApiDeps& d, const Call& c);
Response GetWebhookEvent(const ApiDeps& d, const Call& c);
Response RetryWebhookEvent(const ApiDeps& d, const Call& c);
Response ListWebhookEndpoints(const ApiDeps& d, const Call& c);
Response CreateWebhookEndpoint(const ApiDeps& d, const Call& c);
Response GetWebhookEndpoint(const ApiDeps& d, const Call& c);
Response UpdateWebhookEndpoint(const ApiDeps& d, const Call& c);
Response DeleteWebhookEndpoint(const ApiDeps& d, const Call& c);
Response RollWebhookEndpointSecret(const ApiDeps& d, const Call& c);
Response ListWebhookEndpointDeliveries(const ApiDeps& d, const Call& c);
Response ListEvents(const ApiDeps& d, const Call& c);
Response GetEvent(const ApiDeps& d, const Call& c);
Response RedeliverEvent(const ApiDeps& d, const Call& c);
}  // namespace routes

}  // namespace tally::http
