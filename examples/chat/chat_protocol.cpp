#include "chat_protocol.hpp"

#include <algorithm>
#include <array>
#include <cstdint>

namespace chat {

namespace {

std::string_view trim_blanks(std::string_view text) {
  const std::size_t first = text.find_first_not_of(" \t");
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(" \t") - first + 1);
}

// One decoded UTF-8 sequence: the code point and its length in bytes; length 0 when the bytes
// at the front are not valid UTF-8 (overlong, surrogate, past U+10FFFF, truncated).
struct Decoded {
  char32_t code = 0;
  std::size_t length = 0;
};

Decoded decode_utf8(std::string_view text) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(0);
  if (lead < 0x80) return {lead, 1};
  std::size_t length = 0;
  char32_t code = 0;
  char32_t minimum = 0;
  if ((lead & 0xe0) == 0xc0) length = 2, code = lead & 0x1f, minimum = 0x80;
  else if ((lead & 0xf0) == 0xe0) length = 3, code = lead & 0x0f, minimum = 0x800;
  else if ((lead & 0xf8) == 0xf0) length = 4, code = lead & 0x07, minimum = 0x10000;
  else return {};
  if (text.size() < length) return {};
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xc0) != 0x80) return {};
    code = (code << 6) | (byte(i) & 0x3f);
  }
  if (code < minimum || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return {};
  return {code, length};
}

bool is_control(char32_t c) { return c < 0x20 || (c >= 0x7f && c <= 0x9f); }

// Characters that are invisible or reorder what follows: a nick with them can look like another.
bool is_invisible_format(char32_t c) {
  return (c >= 0x200b && c <= 0x200f) || (c >= 0x202a && c <= 0x202e) || (c >= 0x2060 && c <= 0x2069) ||
         c == 0xfeff || c == 0x00ad || c == 0x061c;
}

bool is_space(char32_t c) { return c == ' ' || c == 0xa0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200a) ||
                                   c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000; }

bool is_colon_like(char32_t c) {
  constexpr std::array<char32_t, 7> colons = {U':', 0xff1a, 0x2236, 0xa789, 0xfe13, 0xfe55, 0x02d0};
  return std::find(colons.begin(), colons.end(), c) != colons.end();
}

void append_hex(std::string& out, std::string_view prefix, std::uint32_t value, int digits) {
  constexpr std::string_view hex = "0123456789abcdef";
  out += prefix;
  for (int shift = 4 * (digits - 1); shift >= 0; shift -= 4) out += hex[(value >> shift) & 0xf];
}

}  // namespace

Command parse_line(std::string_view line) {
  if (line.empty()) return {};
  if (!line.starts_with('/')) return {Command::Kind::message, {}, line};
  const std::size_t space = line.find_first_of(" \t");
  Command command;
  command.verb = line.substr(0, space);
  command.argument = space == std::string_view::npos ? std::string_view() : trim_blanks(line.substr(space + 1));
  if (command.verb == "/who") command.kind = Command::Kind::who;
  else if (command.verb == "/nick") command.kind = Command::Kind::nick;
  else if (command.verb == "/help") command.kind = Command::Kind::help;
  else command.kind = Command::Kind::unknown;
  return command;
}

std::optional<std::string> nick_problem(std::string_view wanted) {
  if (wanted.empty()) return "a nick needs at least one character";
  if ((wanted[0] >= '0' && wanted[0] <= '9') || wanted[0] == '[')
    return "a nick may not start with a digit or '[' (it would look like an address)";
  std::size_t characters = 0;
  for (std::size_t at = 0; at < wanted.size(); ++characters) {
    const Decoded d = decode_utf8(wanted.substr(at));
    if (d.length == 0) return "a nick must be valid UTF-8";
    if (is_space(d.code)) return "a nick may not contain spaces";
    if (is_control(d.code) || is_invisible_format(d.code))
      return "a nick may not contain control or invisible characters";
    if (is_colon_like(d.code)) return "a nick may not contain ':' (it would look like an address)";
    at += d.length;
  }
  if (characters > max_nick) return "a nick has at most " + std::to_string(max_nick) + " characters";
  return std::nullopt;
}

bool same_nick(std::string_view a, std::string_view b) {
  const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [&](char x, char y) {
           return lower(x) == lower(y);
         });
}

std::string nick_key(std::string_view wanted) {
  std::string key(wanted);
  for (char& c : key)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return key;
}

std::string escape_controls(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t at = 0; at < text.size();) {
    const Decoded d = decode_utf8(text.substr(at));
    if (d.length == 0 || d.code < 0x20 || d.code == 0x7f) {
      append_hex(out, "\\x", static_cast<unsigned char>(text[at]), 2);
      ++at;
      continue;
    }
    if (is_control(d.code) || (d.code >= 0x202a && d.code <= 0x202e) || (d.code >= 0x2066 && d.code <= 0x2069))
      append_hex(out, "\\u", d.code, 4);
    else
      out.append(text.substr(at, d.length));
    at += d.length;
  }
  return out;
}

}  // namespace chat
