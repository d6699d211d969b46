#pragma once
// Text rules shared by every layer: UTF-8 validity, blank strings. Pure functions.
#include <string>
#include <string_view>
#include <vector>

namespace tally {

/// Whether |s| is well-formed UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
bool IsValidUtf8(std::string_view s);
/// |s| with every byte that is not part of a well-formed UTF-8 sequence replaced by U+FFFD, so that the text
/// can be put in JSON (which must be UTF-8) without echoing raw bytes.
std::string SanitizeUtf8(std::string_view s);
/// Whether |s| is empty or only ASCII whitespace (space, tab, CR, LF, VT, FF).
bool IsBlank(std::string_view s);

/// |items| joined with '\n' (names that hold no newline), and back: SplitLines(JoinLines(v)) == v; "" is {}.
std::string JoinLines(const std::vector<std::string>& items);
std::vector<std::string> SplitLines(std::string_view text);

}  // namespace tally
