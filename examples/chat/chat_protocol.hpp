#pragma once
/// The chat demo's text rules, apart from any socket so that unit tests and a fuzz target can
/// call them: how a line splits into a command, which nicks are allowed, and how a client's text
/// is made safe to show on the other clients' terminals.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace chat {

/// Longest nick, in characters (UTF-8 code points).
inline constexpr std::size_t max_nick = 32;

/// What one input line asks for.
struct Command {
  enum class Kind { none, message, who, nick, help, unknown };
  Kind kind = Kind::none;     ///< none: an empty line, which is ignored
  std::string_view verb;      ///< "/who", "/nick", ...; the unknown verb as typed; empty for a message
  std::string_view argument;  ///< the text after the verb, trimmed; the whole line for a message
};

/// Splits a line (without its line end) into a command. Views point into `line`.
Command parse_line(std::string_view line);

/// Why `wanted` cannot be a nick, or nothing when it can. A nick is 1 to max_nick characters of
/// valid UTF-8 without spaces, control or invisible formatting characters, and is never shaped
/// like an address (HOST:PORT, [V6]:PORT, unix:/PATH are how clients without a nick are named):
/// no colon or colon look-alike, and no leading digit or '['.
std::optional<std::string> nick_problem(std::string_view wanted);

/// Nicks compare without regard to ASCII case: "Alice" is taken when "alice" is.
bool same_nick(std::string_view a, std::string_view b);
/// What makes two nicks the same, as one string: `wanted` with ASCII letters in lower case
/// (same_nick(a, b) == (nick_key(a) == nick_key(b))); the key a room claims a nick by.
std::string nick_key(std::string_view wanted);

/// A client's text made safe to relay: valid UTF-8 without control characters. C0 controls
/// (CR, ESC, ...), DEL and bytes that are not UTF-8 become "\xNN"; C1 controls and the
/// bidirectional overrides become "\uXXXX"; a backslash stays a backslash. The result never
/// contains a byte below 0x20 or 0x7f, so one relayed line shows as exactly one line.
std::string escape_controls(std::string_view text);

}  // namespace chat
