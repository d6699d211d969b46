#pragma once
// The audit aggregate of the Store port: an append-only log of role changes, warnings and admin actions.
// Reached from a transaction as StoreTx::audit().
#include <cstdint>
#include <string>
#include <vector>

#include "domain/ids.hpp"
#include "domain/result.hpp"
#include "domain/time.hpp"

namespace tally {

/// An append-only audit entry: every role change, warning and admin action, with its cause.
struct AuditEntry {
    int64_t id = 0;
    CustomerId customer_id;
    Timestamp at;
    std::string kind;    // role_changed, downgrade_warning, role_override_set, role_override_cleared, ...
    std::string before;
    std::string after;
    std::string cause;   // event:evt_..., admin:<key id>, time:grace_period_expired, ...
    std::string detail;
};

/// Appends to and reads the audit log inside one transaction. Not thread-safe. Entries are never updated or
/// deleted (both stores refuse it in the schema).
class AuditStoreTx {
public:
    virtual ~AuditStoreTx() = default;
    /// Appends |entry| (its id is assigned by the store, in commit order).
    virtual Status Append(const AuditEntry& entry) = 0;
    /// Newest first; all customers when |customer_id| is empty; at most |limit|.
    virtual Result<std::vector<AuditEntry>> List(const CustomerId& customer_id, int limit) = 0;
};

}  // namespace tally
