#include "adapters/stripe/form_encoding.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace tally::stripe {
namespace bj = boost::json;

std::string EncodeComponent(std::string_view text) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    out.reserve(text.size());
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || c == '[' || c == ']') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += kHex[c >> 4];
            out += kHex[c & 0xf];
        }
    }
    return out;
}

namespace {

std::string Scalar(const bj::value& v) {
    switch (v.kind()) {
        case bj::kind::null: return "";
        case bj::kind::bool_: return v.get_bool() ? "true" : "false";
        case bj::kind::string: return std::string(v.get_string());
        case bj::kind::int64: return std::to_string(v.get_int64());
        case bj::kind::uint64: return std::to_string(v.get_uint64());
        default: return bj::serialize(v);  // doubles: Stripe takes decimal strings where it allows them
    }
}

void Encode(const std::string& key, const bj::value& v, std::string& out) {
    if (v.is_object()) {
        for (const auto& kv : v.get_object()) Encode(key + "[" + std::string(kv.key()) + "]", kv.value(), out);
        return;
    }
    if (v.is_array()) {
        const auto& a = v.get_array();
        for (size_t i = 0; i < a.size(); ++i) Encode(key + "[" + std::to_string(i) + "]", a[i], out);
        return;
    }
    if (!out.empty()) out += '&';
    out += EncodeComponent(key);
    out += '=';
    out += EncodeComponent(Scalar(v));
}

Result<std::string> Unescape(std::string_view text, const std::string& key) {
    std::string out;
    out.reserve(text.size());
    for (size_t i = 0; i < text.size(); ++i) {
        if (text[i] == '+') {
            out += ' ';
        } else if (text[i] == '%') {
            unsigned value = 0;
            if (i + 2 >= text.size()) return InvalidArgument("bad percent-escape", key);
            const auto [p, ec] = std::from_chars(text.data() + i + 1, text.data() + i + 3, value, 16);
            if (ec != std::errc() || p != text.data() + i + 3) return InvalidArgument("bad percent-escape", key);
            out += static_cast<char>(value);
            i += 2;
        } else {
            out += text[i];
        }
    }
    return out;
}

bool IsIndex(const std::string& s) {
    return !s.empty() && s.size() <= 6 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Inserts value at path into root, creating objects; arrays are made afterwards from all-index objects.
Status Insert(bj::object& root, const std::vector<std::string>& path, const std::string& value, const std::string& key) {
    bj::object* node = &root;
    for (size_t i = 0; i + 1 < path.size(); ++i) {
        bj::value& child = (*node)[path[i]];
        if (child.is_null()) child = bj::object();
        if (!child.is_object()) return InvalidArgument("'" + key + "' mixes a value and nested keys", key);
        node = &child.get_object();
    }
    bj::value& leaf = (*node)[path.back()];
    if (!leaf.is_null()) return InvalidArgument("'" + key + "' is given twice or mixes a value and nested keys", key);
    leaf = bj::string(value);
    return {};
}

// Objects whose keys are exactly 0..n-1 become arrays, recursively.
void Arrayify(bj::value& v) {
    if (!v.is_object()) return;
    auto& o = v.get_object();
    for (auto& kv : o) Arrayify(kv.value());
    if (o.empty()) return;
    for (size_t i = 0; i < o.size(); ++i) {
        if (!o.contains(std::to_string(i))) return;
    }
    for (const auto& kv : o) {
        if (!IsIndex(std::string(kv.key()))) return;
    }
    bj::array a;
    for (size_t i = 0; i < o.size(); ++i) a.push_back(std::move(o[std::to_string(i)]));
    v = std::move(a);
}

}  // namespace

std::string EncodeForm(const bj::object& params) {
    std::string out;
    for (const auto& kv : params) Encode(std::string(kv.key()), kv.value(), out);
    return out;
}

Result<bj::object> DecodeForm(std::string_view body) {
    bj::object root;
    size_t pairs = 0;
    size_t pos = 0;
    while (pos < body.size()) {
        size_t end = body.find('&', pos);
        if (end == std::string_view::npos) end = body.size();
        const std::string_view pair = body.substr(pos, end - pos);
        pos = end + 1;
        if (pair.empty()) continue;
        if (++pairs > kFormPairCountMax) return InvalidArgument("too many parameters", "body");
        const size_t eq = pair.find('=');
        const std::string_view raw_key = pair.substr(0, eq);
        const std::string_view raw_value = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
        TALLY_ASSIGN_OR_RETURN(std::string key, Unescape(raw_key, std::string(raw_key)));
        TALLY_ASSIGN_OR_RETURN(std::string value, Unescape(raw_value, key));
        // Split "a[b][c]" into {"a","b","c"}.
        std::vector<std::string> path;
        const size_t open = key.find('[');
        path.push_back(key.substr(0, open));
        if (path.front().empty()) return InvalidArgument("empty parameter name in '" + key + "'", key);
        if (path.front().find(']') != std::string::npos) {
            return InvalidArgument("malformed brackets in '" + key + "'", key);
        }
        size_t i = open;
        while (i != std::string::npos && i < key.size()) {
            if (key[i] != '[') return InvalidArgument("malformed brackets in '" + key + "'", key);
            const size_t close = key.find(']', i);
            if (close == std::string::npos) return InvalidArgument("malformed brackets in '" + key + "'", key);
            std::string part = key.substr(i + 1, close - i - 1);
            if (part.empty()) part = std::to_string(0);  // key[] is taken as key[0]
            path.push_back(std::move(part));
            i = close + 1;
        }
        if (static_cast<int>(path.size()) > kFormDepthMax) return InvalidArgument("'" + key + "' is nested too deeply", key);
        TALLY_TRY(Insert(root, path, value, key));
    }
    bj::value v = std::move(root);
    for (auto& kv : v.get_object()) Arrayify(kv.value());
    return std::move(v.get_object());
}

}  // namespace tally::stripe
