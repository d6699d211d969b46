#pragma once
// Moving up from SQLite: every table of a SQLite database copied into an empty PostgreSQL database.
#include <cstdint>
#include <string>
#include <vector>

#include "domain/result.hpp"

namespace tally::db_copy {

/// What was copied, per table, and verified.
struct TableCopy {
    std::string table;
    int64_t rows = 0;
    uint64_t digest = 0;  // FNV-1a over every row in key order, the same on both sides
};

/// Copies |sqlite_path| (at this build's schema version: run `tally migrate` on it first) into |postgres_url|, which
/// is migrated first and must hold no Tally rows. One PostgreSQL transaction: on any error nothing is left behind.
/// Afterwards identity sequences continue after the copied ids, and every table is read back from PostgreSQL and
/// compared with the source (row count and digest); a difference is kInternal and the copy is rolled back.
/// kInvalidArgument for a source that is not a Tally database of this version; kConflict for a target that is
/// not empty; kUnavailable when either database cannot be opened.
Result<std::vector<TableCopy>> CopySqliteToPostgres(const std::string& sqlite_path, const std::string& postgres_url);

}  // namespace tally::db_copy
