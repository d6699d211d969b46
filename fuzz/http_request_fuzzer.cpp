// Fuzzes the HTTP request parser: tally::http::ParseRequest (Beast's parser with the server's limits, then Tally's
// checks), as a connection parses the bytes a client sends.
//
// Input: the bytes of one request. Properties:
// - a Refusal is one of 400, 413, 414 or 431 with an error code and a message;
// - a Request's target is at most kRequestTargetBytesMax bytes with no control byte or space, its header names
//   are lowercase, and its segments are the target path's non-empty '/'-separated raw segments, each decoded on
//   its own: as many, none empty, and a '/' in one only where its raw segment spelled it %2F.
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "adapters/http/server.hpp"

namespace {

void Check(bool condition) {
    if (!condition) __builtin_trap();
}

bool ContainsEncodedSlash(std::string_view raw) {
    for (size_t i = 0; i + 2 < raw.size(); ++i) {
        if (raw[i] == '%' && raw[i + 1] == '2' && (raw[i + 2] == 'F' || raw[i + 2] == 'f')) return true;
    }
    return false;
}

void CheckRequest(const tally::http::Request& req) {
    Check(!req.method.empty());
    Check(req.target.size() <= tally::http::kRequestTargetBytesMax);
    for (const char c : req.target) {
        const auto u = static_cast<unsigned char>(c);
        Check(u > 0x20 && u != 0x7f);
    }
    for (const auto& [name, value] : req.headers) {
        for (const char c : name) Check(!(c >= 'A' && c <= 'Z'));
    }
    const std::string_view target(req.target);
    const std::string_view raw_path = target.substr(0, target.find('?'));
    std::vector<std::string_view> raw_segments;
    for (size_t pos = 0; pos < raw_path.size();) {
        size_t next = raw_path.find('/', pos);
        if (next == std::string_view::npos) next = raw_path.size();
        if (next > pos) raw_segments.push_back(raw_path.substr(pos, next - pos));
        pos = next + 1;
    }
    Check(req.segments.size() == raw_segments.size());
    for (size_t i = 0; i < req.segments.size(); ++i) {
        const std::string& segment = req.segments[i];
        Check(!segment.empty() && segment.size() <= raw_segments[i].size());
        if (segment.find('/') != std::string::npos) Check(ContainsEncodedSlash(raw_segments[i]));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);
    const auto parsed = tally::http::ParseRequest(bytes);
    if (const auto* refusal = std::get_if<tally::http::Refusal>(&parsed)) {
        const int s = refusal->status;
        Check(s == 400 || s == 413 || s == 414 || s == 431);
        Check(refusal->code != nullptr && refusal->code[0] != '\0' && !refusal->message.empty());
    } else {
        CheckRequest(std::get<tally::http::Request>(parsed));
    }
    return 0;
}
