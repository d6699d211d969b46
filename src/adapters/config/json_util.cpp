#include "adapters/config/json_util.hpp"

namespace tally::json {

std::string Join(const std::string& path, const char* key) { return path.empty() ? key : path + "." + key; }

Result<boost::json::value> Parse(std::string_view text) {
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(text, ec);
    if (ec) return InvalidArgument("malformed JSON: " + ec.message());
    return v;
}

Result<boost::json::value> Parse(std::string_view text, boost::json::storage_ptr resource) {
    boost::system::error_code ec;
    boost::json::value v = boost::json::parse(text, ec, std::move(resource));
    if (ec) return InvalidArgument("malformed JSON: " + ec.message());
    return v;
}

Result<const boost::json::object*> AsObject(const boost::json::value& v, const std::string& path) {
    if (!v.is_object()) return InvalidArgument((path.empty() ? "body" : path) + " must be an object", path);
    return &v.get_object();
}

Result<std::string> RequiredString(const boost::json::object& o, const char* key, const std::string& path) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return MissingArgument(Join(path, key) + " is required", Join(path, key));
    if (!v->is_string()) return InvalidArgument(Join(path, key) + " must be a string", Join(path, key));
    return std::string(v->get_string());
}

Result<std::string> OptionalString(const boost::json::object& o, const char* key, const std::string& path) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return std::string();
    if (!v->is_string()) return InvalidArgument(Join(path, key) + " must be a string", Join(path, key));
    return std::string(v->get_string());
}

namespace {
Result<int64_t> ToInt(const boost::json::value& v, const std::string& full) {
    if (v.is_int64()) return v.get_int64();
    if (v.is_uint64() && v.get_uint64() <= static_cast<uint64_t>(INT64_MAX)) return static_cast<int64_t>(v.get_uint64());
    return InvalidArgument(full + " must be an integer", full);
}
}  // namespace

Result<int64_t> RequiredInt(const boost::json::object& o, const char* key, const std::string& path) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return MissingArgument(Join(path, key) + " is required", Join(path, key));
    return ToInt(*v, Join(path, key));
}

Result<std::optional<int64_t>> OptionalInt(const boost::json::object& o, const char* key, const std::string& path) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return std::optional<int64_t>();
    TALLY_ASSIGN_OR_RETURN(int64_t i, ToInt(*v, Join(path, key)));
    return std::optional<int64_t>(i);
}

Result<bool> OptionalBool(const boost::json::object& o, const char* key, const std::string& path, bool fallback) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return fallback;
    if (!v->is_bool()) return InvalidArgument(Join(path, key) + " must be a boolean", Join(path, key));
    return v->get_bool();
}

Result<std::string> IdOrExpanded(const boost::json::object& o, const char* key, const std::string& path) {
    const auto* v = o.if_contains(key);
    if (v == nullptr || v->is_null()) return std::string();
    if (v->is_string()) return std::string(v->get_string());
    if (v->is_object()) return RequiredString(v->get_object(), "id", Join(path, key));
    return InvalidArgument(Join(path, key) + " must be an id or an object", Join(path, key));
}

}  // namespace tally::json
