#pragma once
#include <sqlite3.h>

#include "domain/result.hpp"

namespace tally::sqlite {

/// Schema version this build knows.
int LatestSchemaVersion();
/// Applies every forward-only migration newer than the database's version, each in its own transaction.
/// kConflict if the database was written by a newer Tally (its version is above LatestSchemaVersion()).
/// Returns the number of migrations applied.
Result<int> Migrate(sqlite3* db);

}  // namespace tally::sqlite
