#include "chat_protocol.hpp"

#include <unicode/uchar.h>
#include <unicode/ucasemap.h>
#include <unicode/uset.h>
#include <unicode/uspoof.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <stdexcept>

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

// Characters that do not show, or change how their neighbours show, by Unicode's own properties
// (no hand table): format characters (Cf: bidi controls, tags, U+FFF9, U+180E, zero widths),
// default-ignorables (U+034F, variation selectors, the Hangul fillers U+3164 and U+FFA0) and
// separators. A nick holding one can look exactly like another nick.
bool is_invisible_format(char32_t c) {
  const auto code = static_cast<UChar32>(c);
  const std::int8_t type = u_charType(code);
  return type == U_FORMAT_CHAR || type == U_LINE_SEPARATOR || type == U_PARAGRAPH_SEPARATOR ||
         type == U_UNASSIGNED || type == U_PRIVATE_USE_CHAR || type == U_SURROGATE ||
         u_hasBinaryProperty(code, UCHAR_DEFAULT_IGNORABLE_CODE_POINT) ||
         u_hasBinaryProperty(code, UCHAR_VARIATION_SELECTOR);
}

// ICU's UTS #39 checker, made once: identifiers of Unicode's recommended (and inclusion)
// characters, in one script or a usual combination (moderately restrictive: Latin plus one other
// script other than Cyrillic, Greek and Cherokee, or Han with Kana/Hangul/Bopomofo), without
// invisible characters and without digits from two numbering systems. Read-only once made, which
// ICU documents as safe from any thread.
struct SpoofChecker {
  USpoofChecker* checker = nullptr;
  SpoofChecker() {
    UErrorCode status = U_ZERO_ERROR;
    checker = uspoof_open(&status);
    USet* allowed = uset_openEmpty();
    uset_addAll(allowed, uspoof_getRecommendedSet(&status));
    uset_addAll(allowed, uspoof_getInclusionSet(&status));
    uspoof_setAllowedChars(checker, allowed, &status);
    uset_close(allowed);
    uspoof_setRestrictionLevel(checker, USPOOF_MODERATELY_RESTRICTIVE);
    uspoof_setChecks(checker, USPOOF_RESTRICTION_LEVEL | USPOOF_INVISIBLE | USPOOF_MIXED_NUMBERS | USPOOF_CHAR_LIMIT,
                     &status);
    if (U_FAILURE(status)) throw std::runtime_error(std::string("ICU spoof checker: ") + u_errorName(status));
  }
  ~SpoofChecker() { uspoof_close(checker); }
  SpoofChecker(const SpoofChecker&) = delete;
  SpoofChecker& operator=(const SpoofChecker&) = delete;
};

const USpoofChecker* spoof_checker() {
  static const SpoofChecker made;
  return made.checker;
}

// `text` (valid UTF-8) case-folded by Unicode's full folding: "STRASSE" and "straße" fold alike.
std::string fold_case(std::string_view text) {
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<UCaseMap, decltype(&ucasemap_close)> map(ucasemap_open(nullptr, U_FOLD_CASE_DEFAULT, &status),
                                                          &ucasemap_close);
  std::string out(text.size() * 3 + 4, '\0');
  int32_t length = ucasemap_utf8FoldCase(map.get(), out.data(), static_cast<int32_t>(out.size()), text.data(),
                                         static_cast<int32_t>(text.size()), &status);
  if (status == U_BUFFER_OVERFLOW_ERROR) {
    status = U_ZERO_ERROR;
    out.resize(static_cast<std::size_t>(length));
    length = ucasemap_utf8FoldCase(map.get(), out.data(), length, text.data(), static_cast<int32_t>(text.size()), &status);
  }
  if (U_FAILURE(status)) return std::string(text);
  out.resize(static_cast<std::size_t>(length));
  return out;
}

// UTS #39's confusable skeleton of `text` (valid UTF-8): two strings that look alike ("alice"
// in Latin, "аӏісе" in Cyrillic; "rn" and "m") have the same skeleton.
std::string skeleton(std::string_view text) {
  UErrorCode status = U_ZERO_ERROR;
  std::string out(text.size() * 4 + 16, '\0');
  int32_t length = uspoof_getSkeletonUTF8(spoof_checker(), 0, text.data(), static_cast<int32_t>(text.size()), out.data(),
                                          static_cast<int32_t>(out.size()), &status);
  if (status == U_BUFFER_OVERFLOW_ERROR) {
    status = U_ZERO_ERROR;
    out.resize(static_cast<std::size_t>(length));
    length = uspoof_getSkeletonUTF8(spoof_checker(), 0, text.data(), static_cast<int32_t>(text.size()), out.data(), length,
                                    &status);
  }
  if (U_FAILURE(status)) return std::string(text);
  out.resize(static_cast<std::size_t>(length));
  return out;
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
  UErrorCode status = U_ZERO_ERROR;
  const int32_t failed = uspoof_checkUTF8(spoof_checker(), wanted.data(), static_cast<int32_t>(wanted.size()), nullptr, &status);
  if (U_FAILURE(status)) return "a nick must be valid UTF-8";
  if (failed & USPOOF_CHAR_LIMIT)
    return "a nick may hold only letters, digits and the marks identifiers use ('-', '.', '_', ...)";
  if (failed & USPOOF_INVISIBLE) return "a nick may not contain control or invisible characters";
  if (failed & USPOOF_MIXED_NUMBERS) return "a nick may not mix digits of several numbering systems";
  if (failed & USPOOF_RESTRICTION_LEVEL)
    return "a nick may not mix scripts that look alike (e.g. Latin with Cyrillic or Greek)";
  return std::nullopt;
}

bool same_nick(std::string_view a, std::string_view b) { return nick_key(a) == nick_key(b); }

// Folding first makes the skeleton blind to case ("Alice", "ALICE"); text that is not valid
// UTF-8 is keyed as it is (it is never a valid nick; ICU would refuse it).
std::string nick_key(std::string_view wanted) {
  for (std::size_t at = 0; at < wanted.size();) {
    const Decoded d = decode_utf8(wanted.substr(at));
    if (d.length == 0) return std::string(wanted);
    at += d.length;
  }
  return skeleton(fold_case(wanted));
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
    if (is_control(d.code) || d.code == 0x2028 || d.code == 0x2029 || (d.code >= 0x202a && d.code <= 0x202e) ||
        (d.code >= 0x2066 && d.code <= 0x2069))
      append_hex(out, "\\u", d.code, 4);
    else
      out.append(text.substr(at, d.length));
    at += d.length;
  }
  return out;
}

namespace {

bool is_digits(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// HOST:PORT as accept() names a client: an IPv4 address, or an IPv6 one in brackets.
bool is_ip_and_port(std::string_view label) {
  const std::size_t colon = label.rfind(':');
  if (colon == std::string_view::npos || !is_digits(label.substr(colon + 1))) return false;
  std::string_view host = label.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
    return std::all_of(host.begin(), host.end(), [](char c) {
      return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || c == ':' || c == '.' || c == '%';
    });
  }
  return !host.empty() && std::all_of(host.begin(), host.end(), [](char c) { return (c >= '0' && c <= '9') || c == '.'; });
}

}  // namespace

bool is_member_label(std::string_view label) {
  if (!nick_problem(label)) return true;
  if (label.starts_with("unix:"))
    return std::all_of(label.begin(), label.end(), [](char c) { return c > 0x20 && c < 0x7f; });
  return is_ip_and_port(label);
}

std::optional<std::string> relayed_line(std::string_view bytes) {
  if (!bytes.ends_with("\r\n")) return std::nullopt;
  const std::string line = escape_controls(bytes.substr(0, bytes.size() - 2));
  const std::string_view text(line);
  const auto between = [&](std::string_view prefix, std::string_view suffix) -> std::optional<std::string_view> {
    if (text.size() < prefix.size() + suffix.size() || !text.starts_with(prefix) || !text.ends_with(suffix)) return std::nullopt;
    return text.substr(prefix.size(), text.size() - prefix.size() - suffix.size());
  };
  bool valid = false;
  if (text.starts_with("Client ")) {
    const std::size_t said = text.find(" said: ");
    valid = said != std::string_view::npos && is_member_label(text.substr(7, said - 7));
  } else if (const auto joined = between("Please welcome ", ", who just joined us")) {
    valid = is_member_label(*joined);
  } else if (const auto left = between("Unfortunately ", " left us")) {
    valid = is_member_label(*left);
  } else if (const std::size_t renamed = text.find(" is now known as "); renamed != std::string_view::npos) {
    valid = is_member_label(text.substr(0, renamed)) && is_member_label(text.substr(renamed + 17));
  }
  if (!valid) return std::nullopt;
  return line + "\r\n";
}

}  // namespace chat
