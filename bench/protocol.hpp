#pragma once
// What netbench sends and how it recognises the answers among other lines (banners, joins):
// every request carries a token naming its connection and sequence number.
//
//   echo request:  "e<conn>.<seq> xxxx...\n"      answer: the same line
//   chat message:  "c<round>.<sender> xxxx...\n"  delivery: "Client HOST:PORT said: c<round>.<sender> ..."

#include <charconv>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace bench {

/// Writes "<kind><a>.<b> " then 'x' padding and '\n' into `out` (capacity `room`), `size` bytes in
/// all when it fits (never shorter than the token and the newline). Returns the length written.
inline std::size_t make_request(char kind, std::uint64_t a, std::uint64_t b, std::size_t size, char* out,
                                std::size_t room) {
  char* p = out;
  char* end = out + room;
  *p++ = kind;
  p = std::to_chars(p, end, a).ptr;
  *p++ = '.';
  p = std::to_chars(p, end, b).ptr;
  *p++ = ' ';
  std::size_t length = static_cast<std::size_t>(p - out) + 1;
  if (size > length && size <= room) {
    std::memset(p, 'x', size - length);
    p += size - length;
    length = size;
  }
  *p = '\n';
  return length;
}

/// The token at the start of `text` ("e12.7 ..."): true with its two numbers when `text` starts
/// with `kind`, digits, '.', digits and a space.
inline bool parse_token(std::string_view text, char kind, std::uint64_t& a, std::uint64_t& b) {
  if (text.size() < 5 || text[0] != kind) return false;
  const char* p = text.data() + 1;
  const char* end = text.data() + text.size();
  auto first = std::from_chars(p, end, a);
  if (first.ec != std::errc() || first.ptr == p || first.ptr == end || *first.ptr != '.') return false;
  p = first.ptr + 1;
  auto second = std::from_chars(p, end, b);
  return second.ec == std::errc() && second.ptr != p && second.ptr != end && *second.ptr == ' ';
}

/// True when `line` (without its line end) answers the echo request of connection `conn` with
/// sequence number `seq`.
inline bool is_echo_of(std::string_view line, std::uint64_t conn, std::uint64_t seq) {
  std::uint64_t a = 0, b = 0;
  return parse_token(line, 'e', a, b) && a == conn && b == seq;
}

/// For a chat delivery line "Client X said: c<round>.<sender> ...": true with round and sender.
inline bool parse_delivery(std::string_view line, std::uint64_t& round, std::uint64_t& sender) {
  constexpr std::string_view said = " said: ";
  if (!line.starts_with("Client ")) return false;
  const std::size_t at = line.find(said);
  return at != std::string_view::npos && parse_token(line.substr(at + said.size()), 'c', round, sender);
}

}  // namespace bench
