#pragma once
#include <sqlite3.h>

#include <limits>

#include "domain/result.hpp"

namespace tally::sqlite {

/// Schema version this build knows.
int LatestSchemaVersion();
/// Applies every forward-only migration newer than the database's version, each in its own transaction.
/// kConflict if the database was written by a newer Tally (its version is above LatestSchemaVersion()).
/// Returns the number of migrations applied. |up_to_version| stops at that version (tests build an older schema
/// with it to check a migration's backfill).
Result<int> Migrate(sqlite3* db, int up_to_version = std::numeric_limits<int>::max());

}  // namespace tally::sqlite
