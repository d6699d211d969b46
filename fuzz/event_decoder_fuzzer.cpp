// Fuzzes the Stripe event decoder: tally::StripeEventDecoder's DecodeEnvelope (the SAX fast path), Decode (the DOM
// path) and ChainEvidence.
//
// Input: one event body; or two, "<a>\0<b>", for ChainEvidence (no NUL: the two halves of the input). Each body
// goes through both decoders, which must agree the way event_decoder_test.cpp's
// EnvelopeFastPathAgreesWithTheDomOnOddBodies checks it: when Decode succeeds, DecodeEnvelope succeeds with the same
// id, type and created; when DecodeEnvelope fails (the DOM path decided), Decode fails with the same error, since
// it runs the same envelope steps first. Decode may fail where DecodeEnvelope succeeds, but only past the envelope
// (livemode, data, data.object...), never with an envelope error.
#include <cstdint>
#include <string>
#include <string_view>

#include "adapters/config/json_util.hpp"
#include "adapters/stripe/event_decoder.hpp"

namespace {

void Check(bool condition) {
    if (!condition) __builtin_trap();
}

// The params Decode's envelope steps (parse, root object, id, type, created, object) name.
bool IsEnvelopeParam(const std::string& param) {
    return param.empty() || param == "id" || param == "type" || param == "created" || param == "object";
}

void CheckAgreement(const tally::StripeEventDecoder& decoder, std::string_view body) {
    const auto fast = decoder.DecodeEnvelope(body);
    const auto dom = decoder.Decode(body);
    if (dom.ok()) {
        Check(fast.ok());
        Check(fast->id.str() == dom->id.str());
        Check(fast->type == dom->type);
        Check(fast->created.unix_seconds() == dom->created.unix_seconds());
        Check(dom->payload.data() == body.data() && dom->payload.size() == body.size());
        return;
    }
    if (!fast.ok()) {
        Check(fast.error().message == dom.error().message);
        Check(fast.error().param == dom.error().param);
        return;
    }
    // The fast path answered; the DOM found the same envelope and failed on the object.
    Check(!IsEnvelopeParam(dom.error().param));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static const tally::StripeEventDecoder decoder;
    const std::string_view input(reinterpret_cast<const char*>(data), size);
    CheckAgreement(decoder, input);

    const size_t nul = input.find('\0');
    const size_t split = nul == std::string_view::npos ? size / 2 : nul;
    const std::string_view a = input.substr(0, split);
    const std::string_view b = input.substr(nul == std::string_view::npos ? split : split + 1);
    if (nul != std::string_view::npos) {
        CheckAgreement(decoder, a);
        CheckAgreement(decoder, b);
    }
    // {a follows b, b follows a}: an error exactly when either is not JSON, and swapping the events swaps the answer.
    const auto ab = decoder.ChainEvidence(a, b);
    Check(ab.ok() == (tally::json::Parse(a).ok() && tally::json::Parse(b).ok()));
    const auto ba = decoder.ChainEvidence(b, a);
    Check(ab.ok() == ba.ok());
    if (ab.ok()) Check(ab->first == ba->second && ab->second == ba->first);
    // An event compared with itself (its previous_attributes against its own object): the whole input when it holds
    // one event.
    const std::string_view one = nul == std::string_view::npos ? input : a;
    const auto self = decoder.ChainEvidence(one, one);
    if (self.ok()) Check(self->first == self->second);
    return 0;
}
