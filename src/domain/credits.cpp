#include "domain/credits.hpp"

#include <algorithm>
#include <cctype>
#include <tuple>

#include "domain/proration.hpp"

namespace tally {
namespace {
__extension__ typedef __int128 Int128;  // NOLINT(modernize-use-using): __extension__ needs the typedef form
}  // namespace

Result<GrantType> ParseGrantType(std::string_view text) {
    if (text == "subscription") return GrantType::kSubscription;
    if (text == "bundle") return GrantType::kBundle;
    if (text == "promotional") return GrantType::kPromotional;
    return InvalidArgument("type must be subscription, bundle or promotional", "type");
}

const char* GrantTypeName(GrantType type) {
    switch (type) {
        case GrantType::kSubscription: return "subscription";
        case GrantType::kBundle: return "bundle";
        case GrantType::kPromotional: return "promotional";
    }
    return "promotional";
}

int DefaultGrantPriority(GrantType type) { return type == GrantType::kSubscription ? 0 : 10; }

bool GrantUsable(const CreditGrantState& grant, Timestamp now) {
    return grant.remaining > 0 && (!grant.expires_at || now < *grant.expires_at);
}

bool SpendsBefore(const CreditGrantState& a, const CreditGrantState& b) {
    // No expiry sorts after every expiry.
    const int64_t ea = a.expires_at ? a.expires_at->unix_seconds() : INT64_MAX;
    const int64_t eb = b.expires_at ? b.expires_at->unix_seconds() : INT64_MAX;
    const int pa = a.type == GrantType::kPromotional ? 0 : 1;  // promotional before paid
    const int pb = b.type == GrantType::kPromotional ? 0 : 1;
    return std::make_tuple(a.priority, ea, pa, a.created.unix_seconds(), std::string_view(a.id)) <
           std::make_tuple(b.priority, eb, pb, b.created.unix_seconds(), std::string_view(b.id));
}

Result<std::vector<CreditDraw>> PlanDeduction(std::vector<CreditGrantState> grants, int64_t amount, Timestamp now) {
    TALLY_TRY(ValidateCreditAmount(amount, "amount"));
    std::erase_if(grants, [&](const CreditGrantState& g) { return !GrantUsable(g, now); });
    std::sort(grants.begin(), grants.end(), SpendsBefore);
    int64_t available = 0;
    for (const auto& g : grants) available += g.remaining;  // each <= 2^53, at most a few thousand grants
    if (available < amount) {
        return Error{ErrorCode::kInsufficientCredits,
                     "insufficient credits: " + std::to_string(available) + " available, " + std::to_string(amount) +
                         " needed",
                     "amount"};
    }
    std::vector<CreditDraw> draws;
    int64_t left = amount;
    for (const auto& g : grants) {
        if (left == 0) break;
        const int64_t take = std::min(left, g.remaining);
        draws.push_back(CreditDraw{g.id, take});
        left -= take;
    }
    return draws;
}

Result<std::vector<CreditDraw>> PlanReturn(const std::vector<CreditDraw>& held, int64_t keep) {
    int64_t total = 0;
    for (const auto& d : held) total += d.amount;
    if (keep < 0 || keep > total) {
        return InvalidArgument("amount must be between 0 and the " + std::to_string(total) + " credits held", "amount");
    }
    std::vector<CreditDraw> back;
    int64_t left = total - keep;
    for (auto it = held.rbegin(); it != held.rend() && left > 0; ++it) {
        const int64_t give = std::min(left, it->amount);
        back.push_back(CreditDraw{it->grant, give});
        left -= give;
    }
    return back;
}

Result<int64_t> UpgradeCredits(int64_t old_allowance, int64_t new_allowance, Period period, Timestamp at) {
    if (new_allowance <= old_allowance) return int64_t{0};
    return ProrateInteger(new_allowance - old_allowance, period, at);
}

Status ValidateCreditBundle(const CreditBundle& b) {
    bool id_ok = !b.id.empty() && b.id.size() <= 64;
    for (char c : b.id) id_ok = id_ok && (std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-');
    if (!id_ok) return InvalidArgument("a bundle id is 1 to 64 letters, digits, '_' or '-'", ".id");
    if (b.name.empty() || b.name.size() > 200) return InvalidArgument("a bundle's name is 1 to 200 characters", ".name");
    TALLY_TRY(ValidateCreditAmount(b.credits, ".credits"));
    if (b.price.amount_minor() <= 0) return InvalidArgument("a bundle's price must be above 0", ".unit_amount");
    if (b.expires_in_days && (*b.expires_in_days < 1 || *b.expires_in_days > kCreditBundleExpiresInDaysMax)) {
        return InvalidArgument("expires_in_days must be between 1 and 3650", ".expires_in_days");
    }
    return {};
}

Result<CreditRefundPlan> PlanRefund(int64_t credits, int64_t amount_paid, int64_t refunded_total,
                                    int64_t accounted_before, int64_t remaining) {
    if (amount_paid <= 0 || refunded_total < 0 || refunded_total > amount_paid || credits < 1 ||
        credits > kCreditAmountMax || accounted_before < 0 || accounted_before > credits || remaining < 0 ||
        remaining > credits) {
        return InvalidArgument("a refund of " + std::to_string(refunded_total) + " of " + std::to_string(amount_paid) +
                               " for " + std::to_string(credits) + " credits is out of range");
    }
    // credits * refunded / paid, half away from zero (all non-negative: half up); 2^53 * 2^63 fits in 128 bits.
    const Int128 scaled = static_cast<Int128>(credits) * refunded_total;
    const auto due = static_cast<int64_t>((2 * scaled + amount_paid) / (2 * static_cast<Int128>(amount_paid)));
    const int64_t increment = std::max<int64_t>(0, due - accounted_before);
    const int64_t take = std::min(increment, remaining);
    return CreditRefundPlan{take, increment - take};
}

Result<int64_t> AutoPurchaseRetryDelay(int64_t failures) {
    if (failures < 1) return InvalidArgument("failures must be at least 1", "failures");
    constexpr int64_t kFirst = 300;
    constexpr int64_t kMax = 86400;
    int64_t delay = kFirst;
    for (int64_t i = 1; i < failures && delay < kMax; ++i) delay *= 6;
    return std::min(delay, kMax);
}

Status ValidateCreditAmount(int64_t amount, const char* param) {
    if (amount < 1 || amount > kCreditAmountMax) {
        return InvalidArgument(std::string(param) + " must be an integer between 1 and 2^53", param);
    }
    return {};
}

Status ValidateTransferId(std::string_view id) {
    bool ok = !id.empty() && id.size() <= kCreditTransferIdLengthMax;
    for (char c : id) ok = ok && c > ' ' && c < 127;
    if (!ok) return InvalidArgument("id must be 1 to 255 printable ASCII characters without spaces", "id");
    for (std::string_view prefix : kDerivedTransferIdPrefixes) {
        if (id.starts_with(prefix)) {
            return InvalidArgument("ids starting with '" + std::string(prefix) + "' are Tally's own", "id");
        }
    }
    return {};
}

}  // namespace tally
