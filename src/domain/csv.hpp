#pragma once
// CSV for exports (RFC 4180), safe to open in a spreadsheet. Pure, table-tested in csv_test.cpp.
#include <string>
#include <string_view>
#include <vector>

namespace tally {

/// |text| as one CSV field: quoted when it holds a comma, quote, CR or LF (quotes doubled, RFC 4180 §2.6-2.7).
/// Text a spreadsheet would run as a formula (starting with =, +, -, @, tab or CR) gets a leading apostrophe first,
/// as OWASP's "CSV Injection" advice says; use it for text, not for numbers Tally formats itself.
std::string CsvText(std::string_view text);

/// One CSV record of already-formatted fields, ending in CRLF (RFC 4180 §2.1).
std::string CsvRecord(const std::vector<std::string>& fields);

}  // namespace tally
