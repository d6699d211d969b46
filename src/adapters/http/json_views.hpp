#pragma once
// JSON shapes of the v1 API. Times are Unix seconds and money integer minor units, as in Stripe's API.
#include <boost/json/value.hpp>

#include "app/billing_service.hpp"
#include "app/store.hpp"

namespace tally::http {

boost::json::value CustomerJson(const CustomerView& view);
boost::json::value EntitlementsJson(const CustomerView& view);
boost::json::value PlanJson(const Plan& plan);
boost::json::value AuditJson(const AuditEntry& entry);
boost::json::value InboxJson(const InboxEvent& event);
/// {"id","object":"api_key","name","scope","created","last_used_at","revoked_at"}, plus "secret" when given (only
/// in the response that creates the key). The digest is never rendered.
boost::json::value ApiKeyJson(const ApiKeyRecord& key, const std::string& secret = {});
/// {"error":{"type","code","message","param"}}; |type| and |code| follow Stripe's vocabulary.
std::string ErrorBody(const std::string& type, const std::string& code, const std::string& message,
                      const std::string& param);

}  // namespace tally::http
