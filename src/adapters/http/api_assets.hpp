#pragma once
// Files compiled into the binary for the API reference: api/openapi.yaml as JSON (converted at build time by
// scripts/openapi_json.py), and Swagger UI's bundle from npm's swagger-ui-dist (api/package.json).
#include <string_view>

namespace tally::http {

/// api/openapi.yaml as JSON: the OpenAPI 3.1 description of every route in ApiRoutes().
std::string_view OpenApiJson();
/// swagger-ui-dist's swagger-ui-bundle.js and swagger-ui.css, served under /docs.
std::string_view SwaggerUiBundleJs();
std::string_view SwaggerUiCss();

}  // namespace tally::http
