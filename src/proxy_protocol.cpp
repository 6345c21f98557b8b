#include "proxy_protocol.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <optional>
#include <utility>

#include <fmt/format.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#include "netserver/listener.hpp"

namespace netserver {

namespace {

using Status = ProxyHeaderParser::Status;
using Progress = ProxyHeaderParser::Progress;

constexpr std::string_view v1_prefix = "PROXY ";
constexpr std::string_view v2_signature{"\r\n\r\n\0\r\nQUIT\n", 12};
constexpr std::size_t shortest_header = 15;  // "PROXY UNKNOWN\r\n"; the shortest v2 header is 16
constexpr std::size_t excerpt_bytes = 32;    // of the peer's bytes quoted in a problem

// v2 address families (high nibble of byte 14) and the address block each needs (spec 2.2).
constexpr unsigned family_unspec = 0, family_inet = 1, family_inet6 = 2, family_unix = 3;
constexpr std::array<std::size_t, 4> address_block_bytes = {0, 12, 36, 216};
constexpr std::array<const char*, 4> family_names = {"AF_UNSPEC", "AF_INET", "AF_INET6", "AF_UNIX"};
constexpr unsigned transport_stream = 1;
constexpr std::size_t unix_path_bytes = 108;

// TLV types (the spec's PP2_TYPE_* and PP2_SUBTYPE_SSL_*) this parser interprets; others are skipped.
constexpr unsigned tlv_authority = 0x02, tlv_crc32c = 0x03, tlv_ssl = 0x20;
constexpr unsigned ssl_version = 0x21, ssl_common_name = 0x22;
constexpr std::size_t authority_max_bytes = 255;  // a DNS name; HAProxy's limit too
constexpr std::size_t ssl_fixed_bytes = 5;        // client (1) and verify (4)

unsigned byte_at(std::string_view bytes, std::size_t at) { return static_cast<unsigned char>(bytes[at]); }
unsigned be16(std::string_view bytes, std::size_t at) { return byte_at(bytes, at) << 8 | byte_at(bytes, at + 1); }
std::uint32_t be32(std::string_view bytes, std::size_t at) {
  return static_cast<std::uint32_t>(be16(bytes, at)) << 16 | be16(bytes, at + 2);
}

// The peer's bytes as printable ASCII: anything else (and \ and ") as \xNN, cut after `limit`.
std::string escaped(std::string_view bytes, std::size_t limit = excerpt_bytes) {
  std::string out;
  for (const unsigned char c : bytes.substr(0, limit)) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
      out += static_cast<char>(c);
    else
      out += fmt::format("\\x{:02x}", c);
  }
  if (bytes.size() > limit) out += "...";
  return out;
}

Progress refuse(std::string& problem, std::string why) {
  problem = std::move(why);
  return {Status::malformed, 0};
}

std::string not_a_header(std::string_view bytes) {
  return fmt::format("not a PROXY protocol header: it starts with \"{}\"", escaped(bytes));
}

// --- addresses ---------------------------------------------------------------------------------

// An AF_INET or AF_INET6 address from its bytes and port, both in network order, into a
// zeroed `storage`.
void set_ip(sockaddr_storage& storage, socklen_t& length, int family, const void* address, const void* port) {
  const bool v4 = family == AF_INET;
  char* base = reinterpret_cast<char*>(&storage);
  storage.ss_family = static_cast<sa_family_t>(family);
  std::memcpy(base + (v4 ? offsetof(sockaddr_in, sin_port) : offsetof(sockaddr_in6, sin6_port)), port, 2);
  std::memcpy(base + (v4 ? offsetof(sockaddr_in, sin_addr) : offsetof(sockaddr_in6, sin6_addr)), address, v4 ? 4 : 16);
  length = v4 ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
}

// A v2 AF_UNIX address: 108 bytes, a path up to its NUL or (first byte NUL) an abstract name
// padded with NULs.
void set_unix(sockaddr_storage& storage, socklen_t& length, std::string_view path) {
  sockaddr_un un{};
  un.sun_family = AF_UNIX;
  std::memcpy(un.sun_path, path.data(), unix_path_bytes);
  std::memcpy(&storage, &un, sizeof un);
  const bool abstract = path.front() == '\0';
  std::string_view name = abstract ? path.substr(1) : path.substr(0, path.find('\0'));
  if (abstract) name = name.substr(0, name.find_last_not_of('\0') + 1);
  length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + (abstract ? 1 : 0) + name.size());
}

// format_address's form; a unix path escaped, as it may hold any byte but NUL.
std::string text_of(const sockaddr_storage& storage, socklen_t length) {
  if (length == 0) return "";
  if (storage.ss_family != AF_UNIX) return format_address(reinterpret_cast<const sockaddr*>(&storage), length);
  const auto& un = reinterpret_cast<const sockaddr_un&>(storage);
  const std::size_t bytes = length - offsetof(sockaddr_un, sun_path);
  const bool abstract = bytes > 0 && un.sun_path[0] == '\0';
  const std::string_view name = abstract ? std::string_view(un.sun_path + 1, bytes - 1) : std::string_view(un.sun_path, bytes);
  return (abstract ? "unix:@" : "unix:") + escaped(name, unix_path_bytes);
}

// --- version 1 ---------------------------------------------------------------------------------

// A decimal number at the start of `text` (consumed): digits only, no leading zero, at most `max`.
bool take_decimal(std::string_view& text, std::uint32_t max, std::uint32_t& value) {
  std::size_t digits = 0;
  value = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
    value = value * 10 + static_cast<std::uint32_t>(text[digits] - '0');
    if (value > max) return false;
    ++digits;
  }
  if (digits == 0 || (digits > 1 && text.front() == '0')) return false;
  text.remove_prefix(digits);
  return true;
}

// The spec's IPv4 form: exactly four decimal numbers 0-255 joined by single dots, no leading zeros.
bool parse_ipv4(std::string_view text, in_addr& out) {
  std::array<unsigned char, 4> octets{};
  for (std::size_t part = 0; part < octets.size(); ++part) {
    if (part > 0) {
      if (text.empty() || text.front() != '.') return false;
      text.remove_prefix(1);
    }
    std::uint32_t value = 0;
    if (!take_decimal(text, 255, value)) return false;
    octets[part] = static_cast<unsigned char>(value);
  }
  if (!text.empty()) return false;
  std::memcpy(&out, octets.data(), octets.size());
  return true;
}

// IPv6 as inet_pton reads it (HAProxy writes IPv4-mapped addresses as ::ffff:a.b.c.d), limited
// to hex digits, colons and dots, and to the longest such text.
bool parse_ipv6(std::string_view text, in6_addr& out) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN ||
      text.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos)
    return false;
  std::array<char, INET6_ADDRSTRLEN> terminated{};
  std::copy(text.begin(), text.end(), terminated.begin());
  return ::inet_pton(AF_INET6, terminated.data(), &out) == 1;
}

bool parse_port(std::string_view text, std::uint16_t& network_order) {
  std::uint32_t value = 0;
  if (!take_decimal(text, 65535, value) || !text.empty()) return false;
  network_order = htons(static_cast<std::uint16_t>(value));
  return true;
}

// "SRC DST SPORT DPORT": exactly four non-empty fields, one space between each.
bool split_fields(std::string_view text, std::array<std::string_view, 4>& fields) {
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const std::size_t space = text.find(' ');
    const bool last = i + 1 == fields.size();
    if (last != (space == std::string_view::npos)) return false;
    fields[i] = text.substr(0, space);
    if (fields[i].empty()) return false;
    if (!last) text.remove_prefix(space + 1);
  }
  return true;
}

bool parse_v1_address(std::string_view text, int family, const std::uint16_t& port, sockaddr_storage& storage,
                      socklen_t& length) {
  in_addr v4{};
  in6_addr v6{};
  if (family == AF_INET ? !parse_ipv4(text, v4) : !parse_ipv6(text, v6)) return false;
  set_ip(storage, length, family, family == AF_INET ? static_cast<const void*>(&v4) : &v6, &port);
  return true;
}

// The line without its CRLF: "PROXY TCP4 SRC DST SPORT DPORT", "PROXY TCP6 ..." or "PROXY UNKNOWN ...".
bool parse_v1_line(std::string_view line, ProxyHeader& header, std::string& problem) {
  header = ProxyHeader{};
  header.version = 1;
  std::string_view rest = line.substr(v1_prefix.size());
  const std::size_t space = rest.find(' ');
  const std::string_view protocol = rest.substr(0, space);
  if (protocol == "UNKNOWN") return true;  // the spec: ignore the rest of the line, keep the connection's addresses
  if (protocol != "TCP4" && protocol != "TCP6") {
    problem = fmt::format("PROXY v1: unknown protocol \"{}\" (expected TCP4, TCP6 or UNKNOWN)", escaped(protocol));
    return false;
  }
  const int family = protocol == "TCP4" ? AF_INET : AF_INET6;
  std::array<std::string_view, 4> fields;
  rest = space == std::string_view::npos ? std::string_view() : rest.substr(space + 1);
  if (!split_fields(rest, fields)) {
    problem = fmt::format("PROXY v1: expected \"{} SRC DST SRCPORT DSTPORT\" with single spaces, got \"{}\"", protocol,
                          escaped(line));
    return false;
  }
  std::uint16_t ports[2] = {};
  for (int i = 0; i < 2; ++i) {
    if (!parse_port(fields[2 + i], ports[i])) {
      problem = fmt::format("PROXY v1: bad {} port \"{}\" (expected 0 to 65535, no leading zeros)",
                            i == 0 ? "source" : "destination", escaped(fields[2 + i]));
      return false;
    }
  }
  const bool source_ok = parse_v1_address(fields[0], family, ports[0], header.source, header.source_length);
  if (!source_ok || !parse_v1_address(fields[1], family, ports[1], header.destination, header.destination_length)) {
    problem = fmt::format("PROXY v1: the {} address \"{}\" is not an {} address in the spec's form",
                          source_ok ? "destination" : "source", escaped(fields[source_ok ? 1 : 0]),
                          family == AF_INET ? "IPv4" : "IPv6");
    return false;
  }
  header.has_addresses = true;
  return true;
}

Progress parse_v1(std::string_view bytes, ProxyHeader& header, std::string& problem) {
  const std::size_t prefix = std::min(bytes.size(), v1_prefix.size());
  if (bytes.substr(0, prefix) != v1_prefix.substr(0, prefix)) return refuse(problem, not_a_header(bytes));
  const std::string_view window = bytes.substr(0, ProxyHeaderParser::v1_max_bytes);
  for (std::size_t i = 0; i < window.size(); ++i) {
    const unsigned c = byte_at(window, i);
    if (c == '\r') {
      if (i + 1 == window.size()) break;  // the LF has not come yet (or would be byte 108)
      if (window[i + 1] != '\n') return refuse(problem, "PROXY v1: a CR not followed by LF");
      if (!parse_v1_line(window.substr(0, i), header, problem)) return {Status::malformed, 0};
      return {Status::done, i + 2};
    }
    if (c == '\n') return refuse(problem, "PROXY v1: a line feed without its carriage return");
    if (c < 0x20 || c >= 0x7f)
      return refuse(problem, fmt::format("PROXY v1: byte 0x{:02x} at offset {}: the line must be printable ASCII", c, i));
  }
  if (window.size() == ProxyHeaderParser::v1_max_bytes)
    return refuse(problem, fmt::format("PROXY v1: no CRLF within the first {} bytes", ProxyHeaderParser::v1_max_bytes));
  return {Status::need_more, bytes.size()};
}

// --- version 2 ---------------------------------------------------------------------------------

// Walks the TLVs filling `region` (which starts `base` bytes into the header), calling
// on_tlv(type, value, value_offset) for each; no TLV may reach past the region's end.
template <class OnTlv>
bool walk_tlvs(std::string_view region, std::size_t base, const char* what, std::string& problem, OnTlv&& on_tlv) {
  std::size_t at = 0;
  while (at < region.size()) {
    if (region.size() - at < 3) {
      problem = fmt::format("PROXY v2: a {} cut off at byte {} ({} of its 3 header bytes)", what, base + at,
                            region.size() - at);
      return false;
    }
    const unsigned type = byte_at(region, at);
    const std::size_t length = be16(region, at + 1);
    const std::size_t left = region.size() - at - 3;
    if (length > left) {
      problem = fmt::format("PROXY v2: {} 0x{:02x} at byte {} claims {} bytes, {} are left", what, type, base + at,
                            length, left);
      return false;
    }
    if (!on_tlv(type, region.substr(at + 3, length), base + at + 3)) return false;
    at += 3 + length;
  }
  return true;
}

bool read_ssl(std::string_view value, std::size_t base, ProxyHeader::Ssl& ssl, std::string& problem) {
  if (value.size() < ssl_fixed_bytes) {
    problem = fmt::format("PROXY v2: the SSL TLV has {} bytes, fewer than its {} fixed ones", value.size(), ssl_fixed_bytes);
    return false;
  }
  ssl.present = true;
  ssl.client = static_cast<std::uint8_t>(byte_at(value, 0));
  ssl.verify = be32(value, 1);
  return walk_tlvs(value.substr(ssl_fixed_bytes), base + ssl_fixed_bytes, "SSL sub-TLV", problem,
                   [&](unsigned type, std::string_view sub, std::size_t) {
                     if (type == ssl_version) ssl.version = sub;
                     if (type == ssl_common_name) ssl.common_name = sub;
                     return true;
                   });
}

// The TLVs from `offset` to the header's end. A TLV this parser interprets may come once.
bool read_tlvs(std::string_view header_bytes, std::size_t offset, ProxyHeader& header, std::string& problem) {
  std::optional<std::size_t> checksum_at;
  bool seen_authority = false;
  auto once = [&](bool already, const char* name) {
    if (already) problem = fmt::format("PROXY v2: a second {} TLV", name);
    return !already;
  };
  const bool walked = walk_tlvs(
      header_bytes.substr(offset), offset, "TLV", problem, [&](unsigned type, std::string_view value, std::size_t at) {
        switch (type) {
          case tlv_authority:
            if (!once(std::exchange(seen_authority, true), "AUTHORITY")) return false;
            if (value.size() > authority_max_bytes) {
              problem = fmt::format("PROXY v2: an AUTHORITY TLV of {} bytes (at most {})", value.size(), authority_max_bytes);
              return false;
            }
            header.authority = value;
            return true;
          case tlv_crc32c:
            if (!once(checksum_at.has_value(), "CRC32C")) return false;
            if (value.size() != 4) {
              problem = fmt::format("PROXY v2: a CRC32C TLV of {} bytes (it has 4)", value.size());
              return false;
            }
            checksum_at = at;
            return true;
          case tlv_ssl:
            return once(header.ssl.present, "SSL") && read_ssl(value, at, header.ssl, problem);
          default: return true;  // NOOP, ALPN, UNIQUE_ID, NETNS, custom: skipped
        }
      });
  if (!walked || !checksum_at) return walked;
  // The checksum covers the whole header with its own four bytes as zeros (spec 2.2.3).
  std::uint32_t crc = crc32c(header_bytes.substr(0, *checksum_at));
  crc = crc32c(std::string_view("\0\0\0\0", 4), crc);
  crc = crc32c(header_bytes.substr(*checksum_at + 4), crc);
  if (crc != be32(header_bytes, *checksum_at)) {
    problem = fmt::format("PROXY v2: CRC32C mismatch (the header says {:08x}, its bytes give {:08x})",
                          be32(header_bytes, *checksum_at), crc);
    return false;
  }
  header.checksum_checked = true;
  return true;
}

void read_addresses(unsigned family, std::string_view block, ProxyHeader& header) {
  if (family == family_unix) {
    set_unix(header.source, header.source_length, block.substr(0, unix_path_bytes));
    set_unix(header.destination, header.destination_length, block.substr(unix_path_bytes, unix_path_bytes));
    return;
  }
  const std::size_t address_bytes = family == family_inet ? 4 : 16;
  const char* ports = block.data() + 2 * address_bytes;
  const int socket_family = family == family_inet ? AF_INET : AF_INET6;
  set_ip(header.source, header.source_length, socket_family, block.data(), ports);
  set_ip(header.destination, header.destination_length, socket_family, block.data() + address_bytes, ports + 2);
}

// A complete v2 header (its length checked against the bytes): command, family, addresses, TLVs.
bool read_v2(std::string_view bytes, ProxyHeader& header, std::string& problem) {
  header = ProxyHeader{};
  header.version = 2;
  const unsigned command = byte_at(bytes, 12) & 0x0f;
  const unsigned family = byte_at(bytes, 13) >> 4, transport = byte_at(bytes, 13) & 0x0f;
  const std::string_view block = bytes.substr(ProxyHeaderParser::v2_fixed_bytes);
  if (command == 0) {
    // LOCAL: the family "is ignored"; when it is AF_UNSPEC (what HAProxy's health checks send)
    // TLVs follow at once and are checked, otherwise the block is skipped unread.
    header.command = ProxyHeader::Command::local;
    return family != family_unspec || read_tlvs(bytes, ProxyHeaderParser::v2_fixed_bytes, header, problem);
  }
  if (family >= address_block_bytes.size()) {
    problem = fmt::format("PROXY v2: unknown address family {} (0 to 3 exist)", family);
    return false;
  }
  if (transport > 2) {
    problem = fmt::format("PROXY v2: unknown transport {} (0 to 2 exist)", transport);
    return false;
  }
  const std::size_t needs = address_block_bytes[family];
  if (block.size() < needs) {
    problem = fmt::format("PROXY v2: {} address bytes, fewer than the {} that {} needs", block.size(), needs,
                          family_names[family]);
    return false;
  }
  // AF_UNSPEC, or a transport other than STREAM on this stream socket: keep the connection's
  // addresses, as the spec lets a receiver do for what it does not support.
  if (family != family_unspec && transport == transport_stream) {
    read_addresses(family, block, header);
    header.has_addresses = true;
  }
  return read_tlvs(bytes, ProxyHeaderParser::v2_fixed_bytes + needs, header, problem);
}

Progress parse_v2(std::string_view bytes, ProxyHeader& header, std::string& problem, std::size_t max_bytes) {
  const std::size_t prefix = std::min(bytes.size(), v2_signature.size());
  if (bytes.substr(0, prefix) != v2_signature.substr(0, prefix)) return refuse(problem, not_a_header(bytes));
  if (bytes.size() > 12) {  // decided as soon as the byte is there, not when the header is complete
    const unsigned version = byte_at(bytes, 12) >> 4, command = byte_at(bytes, 12) & 0x0f;
    if (version != 2) return refuse(problem, fmt::format("PROXY v2 signature with version {} (only 2 exists)", version));
    if (command > 1) return refuse(problem, fmt::format("PROXY v2: unknown command {} (0 LOCAL and 1 PROXY exist)", command));
  }
  if (bytes.size() < ProxyHeaderParser::v2_fixed_bytes) return {Status::need_more, bytes.size()};
  const std::size_t total = ProxyHeaderParser::v2_fixed_bytes + be16(bytes, 14);
  if (total > max_bytes)
    return refuse(problem, fmt::format("PROXY v2: a header of {} bytes, longer than the limit of {}", total, max_bytes));
  if (bytes.size() < total) return {Status::need_more, bytes.size()};
  if (!read_v2(bytes.substr(0, total), header, problem)) return {Status::malformed, 0};
  return {Status::done, total};
}

// The CRC32C table (reflected polynomial 0x82F63B78), built at compile time.
constexpr std::array<std::uint32_t, 256> crc32c_table = [] {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t crc = i;
    for (int bit = 0; bit < 8; ++bit) crc = (crc >> 1) ^ ((crc & 1) ? 0x82F63B78u : 0);
    table[i] = crc;
  }
  return table;
}();

#if defined(__x86_64__)
// SSE 4.2's CRC32 instruction computes CRC32C (the Castagnoli polynomial), eight bytes at a time.
[[gnu::target("sse4.2")]] std::uint32_t crc32c_by_instruction(std::string_view bytes, std::uint32_t crc) {
  std::uint64_t state = ~crc;
  const char* at = bytes.data();
  std::size_t left = bytes.size();
  for (; left >= 8; at += 8, left -= 8) {
    std::uint64_t word = 0;
    std::memcpy(&word, at, 8);
    state = _mm_crc32_u64(state, word);
  }
  auto narrow = static_cast<std::uint32_t>(state);
  for (; left > 0; ++at, --left) narrow = _mm_crc32_u8(narrow, static_cast<unsigned char>(*at));
  return ~narrow;
}
const bool cpu_has_crc32 = __builtin_cpu_supports("sse4.2");
#endif

}  // namespace

std::uint32_t crc32c_by_table(std::string_view bytes, std::uint32_t crc) {
  crc = ~crc;
  for (const unsigned char c : bytes) crc = (crc >> 8) ^ crc32c_table[(crc ^ c) & 0xff];
  return ~crc;
}

std::uint32_t crc32c(std::string_view bytes, std::uint32_t crc) {
#if defined(__x86_64__)
  if (cpu_has_crc32) return crc32c_by_instruction(bytes, crc);
#endif
  return crc32c_by_table(bytes, crc);
}

std::string ProxyHeader::source_text() const { return text_of(source, source_length); }
std::string ProxyHeader::destination_text() const { return text_of(destination, destination_length); }

ProxyHeaderParser::Progress parse_proxy_header(std::string_view bytes, ProxyHeader& header, std::string& problem,
                                               std::size_t max_v2_bytes) {
  if (bytes.empty()) return {Status::need_more, 0};
  if (bytes.front() == v1_prefix.front()) return parse_v1(bytes, header, problem);
  if (bytes.front() == v2_signature.front()) return parse_v2(bytes, header, problem, max_v2_bytes);
  return refuse(problem, not_a_header(bytes));
}

ProxyHeaderParser::ProxyHeaderParser(std::size_t max_v2_bytes)
    : max_v2_bytes_(std::clamp<std::size_t>(max_v2_bytes, v2_fixed_bytes, v2_fixed_bytes + 0xffff)) {}

// The most bytes the header can still grow to, given what it started with.
std::size_t ProxyHeaderParser::limit() const { return pending_.front() == 'P' ? v1_max_bytes : max_v2_bytes_; }

ProxyHeaderParser::Progress ProxyHeaderParser::feed(std::string_view bytes) {
  if (status_ != Status::need_more) return {status_, 0};
  if (pending_.empty()) {  // the usual case: the whole header came in one read, parsed where it lies
    const Progress progress = parse_proxy_header(bytes, header_, problem_, max_v2_bytes_);
    status_ = progress.status;
    if (status_ == Status::need_more) pending_.assign(bytes);  // shorter than limit(): else it was decided
    return progress;
  }
  const std::size_t before = pending_.size();
  pending_.append(bytes.substr(0, limit() - before));
  const Progress progress = parse_proxy_header(pending_, header_, problem_, max_v2_bytes_);
  status_ = progress.status;
  if (status_ == Status::need_more) return {Status::need_more, bytes.size()};
  pending_.clear();
  pending_.shrink_to_fit();
  return {status_, status_ == Status::done ? progress.consumed - before : 0};
}

std::size_t ProxyHeaderParser::needed() const {
  if (status_ != Status::need_more) return 0;
  const std::size_t have = pending_.size();
  if (have == 0) return shortest_header;
  if (pending_.front() == 'P') {
    if (pending_.back() == '\r') return 1;
    return std::max<std::size_t>(2, have < shortest_header ? shortest_header - have : 0);
  }
  if (have < v2_fixed_bytes) return v2_fixed_bytes - have;
  return v2_fixed_bytes + be16(pending_, 14) - have;
}

}  // namespace netserver
