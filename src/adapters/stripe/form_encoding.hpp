#pragma once
// Stripe's request body format: application/x-www-form-urlencoded with bracketed nesting,
// e.g. items[0][price]=price_A&metadata[order_id]=o%201%26x&expand[0]=latest_invoice.
#include <boost/json/value.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "domain/result.hpp"

namespace tally::stripe {

constexpr int kFormDepthMax = 8;              // nesting depth accepted when decoding
constexpr size_t kFormPairCountMax = 10'000;  // key=value pairs accepted when decoding

/// Percent-encodes like stripe-node's encodeQueryValue: RFC 3986 unreserved characters stay, everything else
/// is %XX (uppercase), except '[' and ']', which stay literal for readability (Stripe accepts both).
std::string EncodeComponent(std::string_view text);

/// Encodes a JSON object the way stripe-node does (objects as key[sub], arrays as key[0], key[1]; null as an
/// empty value, which clears a field; booleans as true/false), in the object's key order.
std::string EncodeForm(const boost::json::object& params);

/// Decodes a form body into nested JSON: key[a][b]=v becomes {"key":{"a":{"b":"v"}}}, and runs of numeric
/// indices become arrays ([0], [1], ... in order). Every leaf is a string, as on the wire. kInvalidArgument
/// naming the key for malformed brackets, mixed array/object use, depth over kFormDepthMax, more than
/// kFormPairCountMax pairs, or bad percent-escapes.
Result<boost::json::object> DecodeForm(std::string_view body);

}  // namespace tally::stripe
