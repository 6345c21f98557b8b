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
/// valid UTF-8, an identifier by Unicode's rules (UTS #39 through ICU): only characters Unicode
/// recommends for identifiers (letters, digits, '-', '.', '_', ...; no symbols, no Braille blank),
/// no invisible or format character (tags, U+FFF9, U+180E, variation selectors, U+034F, Hangul
/// fillers, bidi controls, zero widths), one script or a usual combination (moderately
/// restrictive: no Latin mixed with Cyrillic or Greek), digits of one system. It is never shaped
/// like an address (HOST:PORT, [V6]:PORT, unix:/PATH are how clients without a nick are named):
/// no colon or colon look-alike, and no leading digit or '['.
std::optional<std::string> nick_problem(std::string_view wanted);

/// Nicks that look alike are the same nick: "Alice" is taken when "alice" is, and so is a
/// whole-script confusable such as Cyrillic "аӏісе".
bool same_nick(std::string_view a, std::string_view b);
/// What makes two nicks the same, as one string: the UTS #39 confusable skeleton of `wanted`
/// case-folded (same_nick(a, b) == (nick_key(a) == nick_key(b))); the key a room claims a nick
/// by, so the bus's names registry holds skeletons.
std::string nick_key(std::string_view wanted);

/// A client's text made safe to relay: valid UTF-8 without control characters. C0 controls
/// (CR, ESC, ...), DEL and bytes that are not UTF-8 become "\xNN"; C1 controls, the line and
/// paragraph separators U+2028 / U+2029 and the bidirectional overrides become "\uXXXX"; a backslash stays a backslash. The result never
/// contains a byte below 0x20 or 0x7f, so one relayed line shows as exactly one line.
std::string escape_controls(std::string_view text);

/// True when `label` is something this chat could call a member: a valid nick, or an address
/// as the server names a client without one (IPv4:PORT, [IPv6]:PORT, unix:PATH, printable).
bool is_member_label(std::string_view label);

/// The chat's rules applied again to a room message that came from the bus (from Redis: any
/// program that can reach it could have written it). The message must be one line ending in
/// CR LF in one of the forms this server publishes ("Client L said: ...", "Please welcome L, who
/// just joined us", "Unfortunately L left us", "L is now known as M"), each label passing
/// is_member_label; then it is returned with what no client could have sent escaped (a CR LF
/// inside, ESC, U+202E, ...) exactly as escape_controls does, so it shows as one line. Anything
/// else is nothing: it is not relayed.
std::optional<std::string> relayed_line(std::string_view bytes);

}  // namespace chat
