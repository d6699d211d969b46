#include "domain/profile.hpp"

#include <array>
#include <cstdint>
#include <optional>

namespace tally {
namespace {

constexpr std::array<std::string_view, 5> kReserved = {"external_id", "tally_customer_id", "tally_auth_provider",
                                                       "tally_company", "tally_email_verified"};

/// Unicode code points in well-formed UTF-8 |s| (continuation bytes are not counted).
size_t CodePoints(std::string_view s) {
    size_t n = 0;
    for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80 ? 1 : 0;
    return n;
}

void AppendJsonString(std::string& out, std::string_view s) {
    static constexpr char kHex[] = "0123456789abcdef";
    out += '"';
    for (const char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20) {
            out += "\\u00";
            out += kHex[u >> 4];
            out += kHex[u & 0xf];
        } else {
            out += c;
        }
    }
    out += '"';
}

void AppendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
    }
}

/// A reader of one flat JSON object of strings.
class FlatJsonReader {
public:
    explicit FlatJsonReader(std::string_view text) : t_(text) {}
    std::optional<Metadata> Read() {
        Metadata out;
        Skip();
        if (!Eat('{')) return std::nullopt;
        Skip();
        if (Eat('}')) return out;
        for (;;) {
            auto key = String();
            Skip();
            if (!key || !Eat(':')) return std::nullopt;
            Skip();
            auto value = String();
            if (!value) return std::nullopt;
            out[*key] = *value;
            Skip();
            if (Eat('}')) return out;
            if (!Eat(',')) return std::nullopt;
            Skip();
        }
    }

private:
    void Skip() {
        while (i_ < t_.size() && (t_[i_] == ' ' || t_[i_] == '\n' || t_[i_] == '\t' || t_[i_] == '\r')) ++i_;
    }
    bool Eat(char c) {
        if (i_ < t_.size() && t_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }
    std::optional<uint32_t> Hex4() {
        if (i_ + 4 > t_.size()) return std::nullopt;
        uint32_t v = 0;
        for (int k = 0; k < 4; ++k) {
            const char c = t_[i_++];
            v <<= 4;
            if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
            else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
            else return std::nullopt;
        }
        return v;
    }
    std::optional<std::string> String() {
        if (!Eat('"')) return std::nullopt;
        std::string out;
        while (i_ < t_.size()) {
            const char c = t_[i_++];
            if (c == '"') return out;
            if (c != '\\') {
                out += c;
                continue;
            }
            if (i_ >= t_.size()) return std::nullopt;
            const char e = t_[i_++];
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    auto cp = Hex4();
                    if (!cp) return std::nullopt;
                    if (*cp >= 0xD800 && *cp < 0xDC00 && i_ + 1 < t_.size() && t_[i_] == '\\' && t_[i_ + 1] == 'u') {
                        i_ += 2;
                        auto low = Hex4();
                        if (!low || *low < 0xDC00 || *low >= 0xE000) return std::nullopt;
                        *cp = 0x10000 + ((*cp - 0xD800) << 10) + (*low - 0xDC00);
                    }
                    AppendUtf8(out, *cp);
                    break;
                }
                default: return std::nullopt;
            }
        }
        return std::nullopt;
    }

    std::string_view t_;
    size_t i_ = 0;
};

}  // namespace

std::string MetadataToJson(const Metadata& metadata) {
    std::string out = "{";
    for (const auto& [k, v] : metadata) {
        if (out.size() > 1) out += ',';
        AppendJsonString(out, k);
        out += ':';
        AppendJsonString(out, v);
    }
    return out + "}";
}

Metadata MetadataFromJson(std::string_view text) {
    auto parsed = FlatJsonReader(text).Read();
    return parsed ? std::move(*parsed) : Metadata{};
}

std::span<const std::string_view> MetadataReservedKeys() { return kReserved; }

Metadata StripeCustomerMetadata(const Metadata& metadata, const StripeProfileFields& f) {
    Metadata out = metadata;
    for (const auto reserved : kReserved) out.erase(std::string(reserved));  // never the app's to set
    if (!f.external_id.empty()) out["external_id"] = f.external_id;
    out["tally_customer_id"] = f.customer_id;
    if (!f.auth_provider.empty()) out["tally_auth_provider"] = f.auth_provider;
    if (!f.company.empty()) out["tally_company"] = f.company.substr(0, kMetadataValueCharsMax);
    if (f.email_verified) out["tally_email_verified"] = "true";
    return out;
}

std::vector<std::pair<std::string, std::string>> MetadataPatch(const Metadata& current, const Metadata& desired) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& [k, v] : desired) {
        auto it = current.find(k);
        if (it == current.end() || it->second != v) out.emplace_back(k, v);
    }
    for (const auto& [k, v] : current) {
        if (!desired.contains(k)) out.emplace_back(k, "");
    }
    return out;
}

size_t MetadataKeysMax() { return kStripeMetadataKeysMax - kReserved.size(); }

Result<Metadata> ApplyMetadata(const Metadata& current, const MetadataUpdate& update) {
    Metadata out = update.clear_all ? Metadata{} : current;
    for (const auto& [key, value] : update.set) {
        const std::string param = "metadata[" + key + "]";
        if (key.empty()) return InvalidArgument("metadata keys must not be empty", "metadata");
        if (CodePoints(key) > kMetadataKeyCharsMax) {
            return InvalidArgument("metadata keys can be at most " + std::to_string(kMetadataKeyCharsMax) +
                                       " characters long",
                                   param);
        }
        if (key.find_first_of("[]") != std::string::npos) {
            return InvalidArgument("metadata keys cannot contain '[' or ']'", param);
        }
        for (const auto reserved : kReserved) {
            if (key == reserved) {
                return InvalidArgument("metadata key '" + key + "' is reserved: Tally writes it on the Stripe customer",
                                       param);
            }
        }
        if (CodePoints(value) > kMetadataValueCharsMax) {
            return InvalidArgument("metadata values can be at most " + std::to_string(kMetadataValueCharsMax) +
                                       " characters long",
                                   param);
        }
        if (value.empty()) {
            out.erase(key);
        } else {
            out[key] = value;
        }
    }
    if (out.size() > MetadataKeysMax()) {
        return InvalidArgument("metadata can have at most " + std::to_string(MetadataKeysMax()) + " keys (Stripe's " +
                                   std::to_string(kStripeMetadataKeysMax) + " less the " +
                                   std::to_string(kReserved.size()) + " Tally keeps for itself)",
                               "metadata");
    }
    return out;
}

Status ValidateAuthProvider(std::string_view provider) {
    const bool ok_chars = !provider.empty() && provider.size() <= kAuthProviderCharsMax &&
                          provider.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") == std::string_view::npos;
    if (!ok_chars) {
        return InvalidArgument("auth_provider must be 1 to " + std::to_string(kAuthProviderCharsMax) +
                                   " lowercase letters, digits or '_' (e.g. google, github, okta, azure_ad, password)",
                               "auth_provider");
    }
    return {};
}

}  // namespace tally
