#pragma once
// PostgreSQL's own forward-only schema migrations (the same tables as SQLite's, in PostgreSQL's types).
#include <limits>
#include <string>

#include "domain/result.hpp"

namespace tally::postgres {

class PgConnection;

/// Key of the session advisory lock that migrations run under, so nodes starting at once migrate one at a time.
constexpr int64_t kMigrationLockKey = 0x7a11'7a11'0001;

/// Schema version this build knows.
int LatestSchemaVersion();
/// Applies every migration newer than the database's version, each in its own transaction, holding the
/// advisory lock kMigrationLockKey throughout. kConflict if the database was written by a newer Tally.
/// Returns the number of migrations applied.
Result<int> Migrate(PgConnection& conn, int up_to_version = std::numeric_limits<int>::max());

}  // namespace tally::postgres
