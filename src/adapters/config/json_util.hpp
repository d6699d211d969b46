#pragma once
// Typed access to Boost.JSON values with errors that name the JSON path.
#include <boost/json.hpp>

#include <cstdint>
#include <optional>
#include <string>

#include "domain/result.hpp"

namespace tally::json {

/// Parses |text|; kInvalidArgument with the parser's message on malformed JSON.
Result<boost::json::value> Parse(std::string_view text);
/// Parses |text| into |resource| (e.g. a stack-backed monotonic_resource: no malloc per node). The value
/// must not outlive the resource.
Result<boost::json::value> Parse(std::string_view text, boost::json::storage_ptr resource);
/// The object at |v|; kInvalidArgument "<path> must be an object".
Result<const boost::json::object*> AsObject(const boost::json::value& v, const std::string& path);
/// Required string field; kInvalidArgument naming path.key when missing or not a string.
Result<std::string> RequiredString(const boost::json::object& o, const char* key, const std::string& path);
/// Optional string: absent or null -> "", else must be a string.
Result<std::string> OptionalString(const boost::json::object& o, const char* key, const std::string& path);
/// Required integer (JSON number without fraction that fits int64).
Result<int64_t> RequiredInt(const boost::json::object& o, const char* key, const std::string& path);
/// Optional integer: absent or null -> nullopt.
Result<std::optional<int64_t>> OptionalInt(const boost::json::object& o, const char* key, const std::string& path);
/// Optional bool: absent or null -> |fallback|.
Result<bool> OptionalBool(const boost::json::object& o, const char* key, const std::string& path, bool fallback);
/// A field that Stripe sends either as an id string or as an expanded object with "id"; "" when null/absent.
Result<std::string> IdOrExpanded(const boost::json::object& o, const char* key, const std::string& path);
/// Joins a path and a key: Join("", "a") = "a", Join("a", "b") = "a.b".
std::string Join(const std::string& path, const char* key);

}  // namespace tally::json
