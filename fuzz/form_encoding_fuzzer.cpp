// Fuzzes Stripe's form encoding: tally::stripe::DecodeForm, EncodeForm and EncodeComponent.
//
// Input: a form body. Properties (form_encoding.hpp; form_encoding_test.cpp's DecodeIsTheInverse):
// - decoding is the inverse of encoding on what DecodeForm produces: DecodeForm(EncodeForm(DecodeForm(x)))
//   succeeds and equals DecodeForm(x) (the same nesting, arrays, strings and key order);
// - EncodeComponent percent-encodes any bytes so that DecodeForm gives them back: DecodeForm("k=" +
//   EncodeComponent(x)) is {"k": x}, and its output holds no '&', '=', '+' or '%' not starting an escape;
// - EncodeForm of any JSON object (when the input is one), and decoding that, do not crash.
#include <boost/json.hpp>

#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>

#include "adapters/stripe/form_encoding.hpp"

namespace {

namespace bj = boost::json;

void Check(bool condition) {
    if (!condition) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view input(reinterpret_cast<const char*>(data), size);

    auto decoded = tally::stripe::DecodeForm(input);
    if (decoded.ok()) {
        const std::string encoded = tally::stripe::EncodeForm(*decoded);
        auto again = tally::stripe::DecodeForm(encoded);
        Check(again.ok());
        Check(bj::serialize(*again) == bj::serialize(*decoded));
    } else {
        Check(decoded.error().code == tally::ErrorCode::kInvalidArgument);
    }

    const std::string component = tally::stripe::EncodeComponent(input);
    for (size_t i = 0; i < component.size(); ++i) {
        const char c = component[i];
        Check(c != '&' && c != '=' && c != '+');
        if (c == '%') {
            Check(i + 2 < component.size() && std::isxdigit(static_cast<unsigned char>(component[i + 1])) &&
                  std::isxdigit(static_cast<unsigned char>(component[i + 2])));
        }
    }
    auto value = tally::stripe::DecodeForm("k=" + component);
    Check(value.ok() && value->size() == 1 && value->contains("k") && value->at("k").is_string());
    Check(value->at("k").get_string() == input);

    bj::error_code ec;
    const bj::value json = bj::parse(input, ec);
    if (!ec && json.is_object()) (void)tally::stripe::DecodeForm(tally::stripe::EncodeForm(json.get_object()));
    return 0;
}
