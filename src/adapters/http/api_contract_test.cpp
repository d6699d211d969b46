// The route table (ApiRoutes) and the OpenAPI document compiled into the binary (api/openapi.yaml) describe the
// same API: every route is in the spec with the same access, every operation in the spec is a route, and each
// operation documents its path parameters and its error answer.
#include <boost/json.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <string>

#include "adapters/http/api.hpp"
#include "adapters/http/api_assets.hpp"

namespace tally::http {
namespace {

namespace bj = boost::json;

std::string Lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

const char* AccessName(Access a) {
    switch (a) {
        case Access::kPublic: return "public";
        case Access::kApiKey: return "api_key";
        case Access::kApiKeyOrSession: return "api_key_or_session";
    }
    return "?";
}

bj::object Spec() { return bj::parse(OpenApiJson()).as_object(); }

/// The {names} of a path template, in order.
std::vector<std::string> TemplateParams(const std::string& path) {
    std::vector<std::string> out;
    for (size_t open = path.find('{'); open != std::string::npos; open = path.find('{', open + 1)) {
        out.push_back(path.substr(open + 1, path.find('}', open) - open - 1));
    }
    return out;
}

/// The names of the path parameters an operation declares (its own and its path item's), following $refs into
/// components.parameters.
std::set<std::string> DeclaredPathParams(const bj::object& spec, const bj::object& item, const bj::object& op) {
    std::set<std::string> names;
    for (const bj::object* holder : {&item, &op}) {
        const bj::value* params = holder->if_contains("parameters");
        if (params == nullptr) continue;
        for (const bj::value& p : params->as_array()) {
            const bj::object* param = &p.as_object();
            if (const bj::value* ref = param->if_contains("$ref")) {
                const std::string name(ref->as_string().subview().substr(std::string("#/components/parameters/").size()));
                param = &spec.at("components").at("parameters").at(name).as_object();
            }
            if (param->at("in").as_string() == "path") names.insert(std::string(param->at("name").as_string()));
        }
    }
    return names;
}

TEST(ApiContract, SpecIsOpenApi31WithInfo) {
    const bj::object spec = Spec();
    EXPECT_EQ(spec.at("openapi").as_string().subview().substr(0, 3), "3.1");
    EXPECT_FALSE(spec.at("info").at("title").as_string().empty());
}

TEST(ApiContract, EveryRouteIsInTheSpecWithItsAccess) {
    const bj::object spec = Spec();
    const bj::object& paths = spec.at("paths").as_object();
    for (const Route& r : ApiRoutes()) {
        SCOPED_TRACE(std::string(r.method) + " " + r.path);
        const bj::value* item = paths.if_contains(r.path);
        ASSERT_NE(item, nullptr) << "path missing from api/openapi.yaml";
        const bj::value* op = item->as_object().if_contains(Lower(r.method));
        ASSERT_NE(op, nullptr) << "method missing from api/openapi.yaml";
        const bj::object& o = op->as_object();
        ASSERT_TRUE(o.contains("x-tally-access"));
        EXPECT_EQ(o.at("x-tally-access").as_string(), AccessName(r.access));
        // Security says the same as the access: public routes need none, the others a bearer token.
        const bj::value* security = o.if_contains("security");
        const bool no_credentials = security != nullptr && security->as_array().empty();
        EXPECT_EQ(no_credentials, r.access == Access::kPublic);
        const bool session_allowed = security != nullptr && std::any_of(security->as_array().begin(),
                                                                         security->as_array().end(), [](const bj::value& s) {
                                                                             return s.as_object().contains("customerSession");
                                                                         });
        EXPECT_EQ(session_allowed, r.access == Access::kApiKeyOrSession);
        EXPECT_TRUE(o.contains("operationId"));
        ASSERT_TRUE(o.contains("responses"));
        EXPECT_TRUE(o.at("responses").as_object().contains("default")) << "the error answer is not documented";
        const std::vector<std::string> in_path = TemplateParams(r.path);
        const std::set<std::string> declared = DeclaredPathParams(spec, item->as_object(), o);
        EXPECT_EQ(declared, std::set<std::string>(in_path.begin(), in_path.end()));
    }
}

TEST(ApiContract, EveryOperationInTheSpecIsARoute) {
    const bj::object spec = Spec();
    std::set<std::string> routes;
    for (const Route& r : ApiRoutes()) routes.insert(Lower(r.method) + " " + r.path);
    std::set<std::string> operation_ids;
    for (const auto& [path, item] : spec.at("paths").as_object()) {
        for (const auto& [method, op] : item.as_object()) {
            if (method == "parameters" || method == "summary" || method == "description") continue;
            const std::string key = std::string(method) + " " + std::string(path);
            EXPECT_TRUE(routes.contains(key)) << key << " is in api/openapi.yaml but not in the route table";
            const std::string id(op.at("operationId").as_string());
            EXPECT_TRUE(operation_ids.insert(id).second) << "operationId " << id << " is used twice";
        }
    }
}

TEST(ApiContract, RoutesAreUniqueAndTemplatesMatchTheirOwnPaths) {
    std::set<std::string> seen;
    for (const Route& r : ApiRoutes()) {
        EXPECT_TRUE(seen.insert(std::string(r.method) + " " + r.path).second) << r.method << " " << r.path;
        EXPECT_EQ(int{r.handler != nullptr} + int{r.async != nullptr} + int{r.call_async != nullptr}, 1) << r.path;
        if (r.async != nullptr) {
            EXPECT_EQ(r.access, Access::kPublic) << r.path;
        }
        // A request for the template itself (ids spelled as {id}) is routed to this route, not an earlier one.
        Request req;
        req.method = r.method;
        req.path = r.path;
        req.segments = PathSegments(r.path);
        EXPECT_EQ(RouteTemplate(req), r.path);
    }
}

}  // namespace
}  // namespace tally::http
