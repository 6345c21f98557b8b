// The PROXY protocol header parser (src/proxy_protocol.*): v1 and v2, every way a header can be
// wrong, and the same answer whether the bytes come at once or one at a time.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <string>

#include <catch2/catch.hpp>

#include "proxy_protocol.hpp"

using namespace netserver;
using Status = ProxyHeaderParser::Status;

namespace {

const std::string signature("\r\n\r\n\0\r\nQUIT\n", 12);
constexpr unsigned proxy_command = 0x21, local_command = 0x20;
constexpr unsigned tcp4 = 0x11, tcp6 = 0x21, unix_stream = 0x31, udp4 = 0x12, unspec = 0x00;

std::string big_endian(std::size_t value, int bytes) {
  std::string out;
  for (int i = bytes - 1; i >= 0; --i) out += static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

// A v2 header: the signature, version/command, family/transport, the length, then `body`.
std::string v2(unsigned version_command, unsigned family_transport, const std::string& body) {
  return signature + static_cast<char>(version_command) + static_cast<char>(family_transport) +
         big_endian(body.size(), 2) + body;
}

std::string tlv(unsigned type, const std::string& value) {
  return static_cast<char>(type) + big_endian(value.size(), 2) + value;
}

std::string ipv4(const char* text) {
  in_addr address{};
  REQUIRE(::inet_pton(AF_INET, text, &address) == 1);
  return std::string(reinterpret_cast<const char*>(&address), 4);
}

std::string ipv6(const char* text) {
  in6_addr address{};
  REQUIRE(::inet_pton(AF_INET6, text, &address) == 1);
  return std::string(reinterpret_cast<const char*>(&address), 16);
}

std::string inet_block(const std::string& source, const std::string& destination, unsigned source_port,
                       unsigned destination_port) {
  return source + destination + big_endian(source_port, 2) + big_endian(destination_port, 2);
}

std::string v4_block() { return inet_block(ipv4("127.0.0.2"), ipv4("127.0.0.1"), 5555, 8000); }

// Writes the CRC32C of `header` into the value of its CRC32C TLV (which must hold zeros).
std::string with_checksum(std::string header) {
  const std::size_t at = header.find(tlv(0x03, std::string(4, '\0')));
  REQUIRE(at != std::string::npos);
  header.replace(at + 3, 4, big_endian(crc32c(header), 4));
  return header;
}

struct Parsed {
  Status status;
  std::size_t consumed;
  ProxyHeader header;
  std::string problem;
};

// Feeds `bytes` at once to a fresh parser.
Parsed parse(const std::string& bytes, std::size_t max_v2 = ProxyHeaderParser::default_max_v2_bytes) {
  ProxyHeaderParser parser(max_v2);
  const auto progress = parser.feed(bytes);
  return {progress.status, progress.consumed, parser.header(), parser.problem()};
}

// Feeds `bytes` one byte at a time; stops at the first answer other than need_more.
Parsed parse_bytewise(const std::string& bytes) {
  ProxyHeaderParser parser;
  std::size_t consumed = 0;
  for (const char c : bytes) {
    const auto progress = parser.feed(std::string_view(&c, 1));
    if (progress.status == Status::need_more) REQUIRE(progress.consumed == 1);
    consumed += progress.consumed;
    if (progress.status != Status::need_more) break;
  }
  return {parser.status(), consumed, parser.header(), parser.problem()};
}

// The header must be refused, for a reason containing `reason`, whether fed at once or bytewise.
void check_malformed(const std::string& bytes, const std::string& reason) {
  INFO("header: " << bytes);
  const Parsed once = parse(bytes);
  CHECK(once.status == Status::malformed);
  CHECK(once.consumed == 0);
  CHECK_THAT(once.problem, Catch::Contains(reason));
  const Parsed bytewise = parse_bytewise(bytes);
  CHECK(bytewise.status == Status::malformed);
  // The same reason; only a quoted excerpt of the peer's bytes can be shorter.
  auto reason_only = [](const std::string& problem) { return problem.substr(0, problem.find(" it starts with ")); };
  CHECK(reason_only(bytewise.problem) == reason_only(once.problem));
}

bool printable(const std::string& text) {
  for (const unsigned char c : text)
    if (c < 0x20 || c >= 0x7f) return false;
  return true;
}

}  // namespace

// --- version 1 ---------------------------------------------------------------------------------

TEST_CASE("a v1 TCP4 header gives the client's addresses and leaves the client's bytes", "[proxy]") {
  const std::string header = "PROXY TCP4 192.0.2.1 198.51.100.22 56324 443\r\n";
  const Parsed parsed = parse(header + "GET / HTTP/1.0\r\n");
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.consumed == header.size());
  CHECK(parsed.header.version == 1);
  CHECK(parsed.header.command == ProxyHeader::Command::proxy);
  CHECK(parsed.header.has_addresses);
  CHECK(parsed.header.source_text() == "192.0.2.1:56324");
  CHECK(parsed.header.destination_text() == "198.51.100.22:443");
  REQUIRE(parsed.header.source.ss_family == AF_INET);
  CHECK(parsed.header.source_length == sizeof(sockaddr_in));
  const auto& source = reinterpret_cast<const sockaddr_in&>(parsed.header.source);
  CHECK(ntohs(source.sin_port) == 56324);
  CHECK(ntohl(source.sin_addr.s_addr) == 0xC0000201);
}

TEST_CASE("a v1 TCP6 header gives IPv6 addresses and IPv4-mapped ones shown as IPv4", "[proxy]") {
  Parsed parsed = parse("PROXY TCP6 2001:db8::1 ::1 1 65535\r\n");
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.header.source.ss_family == AF_INET6);
  CHECK(parsed.header.source_length == sizeof(sockaddr_in6));
  CHECK(parsed.header.source_text() == "[2001:db8::1]:1");
  CHECK(parsed.header.destination_text() == "[::1]:65535");

  parsed = parse("PROXY TCP6 ::ffff:127.0.0.2 ::ffff:127.0.0.1 5555 0\r\n");  // as HAProxy writes a mixed pair
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.header.source_text() == "127.0.0.2:5555");
  CHECK(parsed.header.destination_text() == "127.0.0.1:0");

  parsed = parse("PROXY TCP6 FFFF:ffff:ffff:ffff:ffff:ffff:ffff:ffff 0000:0:0:0:0:0:0:1 65535 65535\r\n");
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.header.source_text() == "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
}

TEST_CASE("a v1 UNKNOWN header keeps the connection's addresses", "[proxy]") {
  for (const std::string header : {"PROXY UNKNOWN\r\n", "PROXY UNKNOWN 1.2.3.4 whatever goes here\r\n"}) {
    const Parsed parsed = parse(header + "hello");
    REQUIRE(parsed.status == Status::done);
    CHECK(parsed.consumed == header.size());
    CHECK_FALSE(parsed.header.has_addresses);
    CHECK(parsed.header.source_text().empty());
    CHECK(parsed.header.source_length == 0);
  }
  check_malformed("PROXY UNKNOWNX\r\n", "unknown protocol \"UNKNOWNX\"");
}

TEST_CASE("a v1 header is at most 107 bytes", "[proxy]") {
  const std::string longest = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                              "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
  REQUIRE(longest.size() == 107);
  CHECK(parse(longest).status == Status::done);
  CHECK(parse_bytewise(longest).status == Status::done);
  std::string too_long = longest;
  too_long.insert(20, "f");
  check_malformed(too_long, "no CRLF within the first 107 bytes");
  check_malformed("PROXY TCP4 " + std::string(189, '1'), "no CRLF within the first 107 bytes");  // 200 bytes of v1
}

TEST_CASE("v1 ports are decimal 0 to 65535 without leading zeros", "[proxy]") {
  CHECK(parse("PROXY TCP4 1.2.3.4 5.6.7.8 0 65535\r\n").status == Status::done);
  for (const char* port : {"080", "65536", "99999999999", "-1", "+1", "1a", "0x10", "00"}) {
    check_malformed(std::string("PROXY TCP4 1.2.3.4 5.6.7.8 ") + port + " 80\r\n", "bad source port");
    check_malformed(std::string("PROXY TCP4 1.2.3.4 5.6.7.8 80 ") + port + "\r\n", "bad destination port");
  }
}

TEST_CASE("v1 addresses must be in the spec's form for their protocol", "[proxy]") {
  for (const char* address : {"1.2.3.04", "1.2.3", "1.2.3.4.5", "256.1.1.1", "1..2.3", "01.2.3.4", "localhost",
                              "1.2.3.4/8", "::1", "0x7f.0.0.1"})
    check_malformed(std::string("PROXY TCP4 ") + address + " 5.6.7.8 1 2\r\n", "the source address");
  check_malformed("PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "the destination address \"::1\" is not an IPv4 address");
  check_malformed("PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "the source address \"1.2.3.4\" is not an IPv6 address");
  check_malformed("PROXY TCP6 ::1 5.6.7.8 1 2\r\n", "the destination address \"5.6.7.8\" is not an IPv6 address");
  for (const char* address : {"1:2:3:4:5:6:7:8:9", "::g", ":::1", "1::2::3", "fe80::1%eth0", "[::1]"})
    check_malformed(std::string("PROXY TCP6 ") + address + " ::1 1 2\r\n", "the source address");
}

TEST_CASE("v1 fields are separated by exactly one space", "[proxy]") {
  const char* reason = "with single spaces";
  check_malformed("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", reason);
  check_malformed("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", reason);
  check_malformed("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", reason);
  check_malformed("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", reason);
  check_malformed("PROXY TCP4\r\n", reason);
  check_malformed("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "byte 0x09 at offset 18");
  check_malformed("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol \"\"");
  check_malformed("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "unknown protocol \"UDP4\"");
}

TEST_CASE("a v1 line ends with CRLF and nothing else", "[proxy]") {
  check_malformed("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "a line feed without its carriage return");
  check_malformed("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "a CR not followed by LF");
  check_malformed("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "a CR not followed by LF");
  check_malformed(std::string("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", 33), "byte 0x00 at offset 18");
  check_malformed("PROXY UNKNOWN \x1b[2J\r\n", "byte 0x1b");
  check_malformed("PROXY UNKNOWN caf\xc3\xa9\r\n", "byte 0xc3");
}

TEST_CASE("a truncated header needs more bytes: the caller's timeout decides", "[proxy]") {
  for (const std::string& bytes : {std::string("P"), std::string("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"), signature,
                                  v2(proxy_command, tcp4, v4_block()).substr(0, 27)}) {
    const Parsed parsed = parse(bytes);
    CHECK(parsed.status == Status::need_more);
    CHECK(parsed.consumed == bytes.size());
  }
  CHECK(parse("").status == Status::need_more);
}

// --- what is not a PROXY header -----------------------------------------------------------------

TEST_CASE("anything else is refused at its first wrong byte", "[proxy]") {
  check_malformed("GET / HTTP/1.0\r\n\r\n", "not a PROXY protocol header: it starts with \"GET / HTTP/1.0\\x0d\\x0a");
  check_malformed("G", "not a PROXY protocol header");
  check_malformed("PROXX TCP4", "not a PROXY protocol header");
  check_malformed("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "not a PROXY protocol header");
  check_malformed(std::string("\r\n\r\n\0\r\nQUIX\n", 12) + std::string(4, '\0'), "not a PROXY protocol header");
  check_malformed(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11), "it starts with \"\\x16\\x03");  // a TLS ClientHello
  // A quoted excerpt is bounded and escaped.
  const Parsed parsed = parse(std::string(1000, '\x01'));
  CHECK(parsed.problem.size() < 200);
  CHECK(printable(parsed.problem));
  CHECK_THAT(parsed.problem, Catch::EndsWith("...\""));
}

// --- version 2 ---------------------------------------------------------------------------------

TEST_CASE("a v2 PROXY TCP over IPv4 header gives the client's addresses", "[proxy]") {
  const std::string header = v2(proxy_command, tcp4, v4_block());
  REQUIRE(header.size() == 28);
  const Parsed parsed = parse(header + "client bytes");
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.consumed == 28);
  CHECK(parsed.header.version == 2);
  CHECK(parsed.header.command == ProxyHeader::Command::proxy);
  CHECK(parsed.header.has_addresses);
  CHECK(parsed.header.source_text() == "127.0.0.2:5555");
  CHECK(parsed.header.destination_text() == "127.0.0.1:8000");
  CHECK(parsed.header.source_length == sizeof(sockaddr_in));
  CHECK(parsed.header.authority.empty());
  CHECK_FALSE(parsed.header.ssl.present);
  CHECK_FALSE(parsed.header.checksum_checked);
}

TEST_CASE("a v2 PROXY TCP over IPv6 header", "[proxy]") {
  const Parsed parsed = parse(v2(proxy_command, tcp6, inet_block(ipv6("2001:db8::7"), ipv6("::1"), 40000, 443)));
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.consumed == 16 + 36);
  CHECK(parsed.header.source.ss_family == AF_INET6);
  CHECK(parsed.header.source_text() == "[2001:db8::7]:40000");
  CHECK(parsed.header.destination_text() == "[::1]:443");
}

TEST_CASE("a v2 UNIX stream header gives unix addresses with their bytes escaped", "[proxy]") {
  auto path = [](const std::string& text) { return text + std::string(108 - text.size(), '\0'); };
  Parsed parsed = parse(v2(proxy_command, unix_stream, path("/run/client.sock") + path("/run/app.sock")));
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.consumed == 16 + 216);
  CHECK(parsed.header.has_addresses);
  CHECK(parsed.header.source.ss_family == AF_UNIX);
  CHECK(parsed.header.source_text() == "unix:/run/client.sock");
  CHECK(parsed.header.destination_text() == "unix:/run/app.sock");
  CHECK(parsed.header.source_length == offsetof(sockaddr_un, sun_path) + 16);

  parsed = parse(v2(proxy_command, unix_stream, path(std::string("\0abstract", 9)) + path("/tmp/\x1b[31mred")));
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.header.source_text() == "unix:@abstract");
  CHECK(parsed.header.destination_text() == "unix:/tmp/\\x1b[31mred");

  parsed = parse(v2(proxy_command, unix_stream, std::string(216, 'a')));  // no NUL at all: bounded by the field
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.header.source_text() == "unix:" + std::string(108, 'a'));
}

TEST_CASE("a v2 LOCAL header keeps the connection's addresses", "[proxy]") {
  Parsed parsed = parse(v2(local_command, unspec, "") + "data");
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.consumed == 16);
  CHECK(parsed.header.command == ProxyHeader::Command::local);
  CHECK_FALSE(parsed.header.has_addresses);
  CHECK(parsed.header.source_text().empty());

  // HAProxy's health checks: LOCAL, AF_UNSPEC, TLVs straight after the fixed part (checked).
  parsed = parse(with_checksum(v2(local_command, unspec, tlv(0x04, "pad") + tlv(0x03, std::string(4, '\0')))));
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.header.checksum_checked);

  // The family of a LOCAL header is ignored, addresses and all.
  parsed = parse(v2(local_command, tcp4, v4_block() + "\xff\xff"));
  REQUIRE(parsed.status == Status::done);
  CHECK_FALSE(parsed.header.has_addresses);
  CHECK(parsed.consumed == 16 + 14);
}

TEST_CASE("v2 families and transports this server does not take keep the connection's addresses", "[proxy]") {
  for (const unsigned family_transport : {unspec, udp4, 0x10u /* AF_INET, UNSPEC */, 0x22u /* UDP6 */}) {
    INFO("family/transport 0x" << std::hex << family_transport);
    const std::string block = (family_transport >> 4) == 2 ? std::string(36, '\0') : (family_transport >> 4) == 1 ? v4_block() : "";
    const Parsed parsed = parse(v2(proxy_command, family_transport, block));
    REQUIRE(parsed.status == Status::done);
    CHECK(parsed.header.command == ProxyHeader::Command::proxy);
    CHECK_FALSE(parsed.header.has_addresses);
  }
}

TEST_CASE("v2 version and command and family and transport are checked as soon as they arrive", "[proxy]") {
  check_malformed(signature + '\x11', "PROXY v2 signature with version 1");
  check_malformed(signature + '\x31', "with version 3");
  check_malformed(signature + '\x22', "unknown command 2");
  check_malformed(signature + '\x2f' + std::string(3, '\0'), "unknown command 15");
  check_malformed(v2(proxy_command, 0x41, std::string(12, '\0')), "unknown address family 4");
  check_malformed(v2(proxy_command, 0x13, v4_block()), "unknown transport 3");
}

TEST_CASE("a v2 address block shorter than its family needs is refused", "[proxy]") {
  check_malformed(v2(proxy_command, tcp4, v4_block().substr(0, 11)), "11 address bytes, fewer than the 12 that AF_INET needs");
  check_malformed(v2(proxy_command, tcp6, std::string(35, '\0')), "fewer than the 36 that AF_INET6 needs");
  check_malformed(v2(proxy_command, unix_stream, std::string(215, 'a')), "fewer than the 216 that AF_UNIX needs");
}

TEST_CASE("a v2 header longer than the limit is refused from its length field", "[proxy]") {
  const std::string header = v2(proxy_command, tcp4, v4_block() + tlv(0x04, std::string(5000, 'x')));
  const Parsed parsed = parse(header.substr(0, 16));  // refused before the body is even sent
  CHECK(parsed.status == Status::malformed);
  CHECK_THAT(parsed.problem, Catch::Contains("a header of 5031 bytes, longer than the limit of 4096"));
  CHECK(parse(header, 6000).status == Status::done);  // a larger limit takes it
  CHECK(parse(v2(proxy_command, tcp4, v4_block()), 27).status == Status::malformed);
  CHECK(parse(v2(proxy_command, tcp4, v4_block()), 28).status == Status::done);
}

TEST_CASE("v2 TLVs: AUTHORITY and SSL are exposed and the others skipped", "[proxy]") {
  const std::string ssl = tlv(0x20, std::string("\x07\0\0\0\0", 5) + tlv(0x21, "TLSv1.3") + tlv(0x22, "client.test") +
                                        tlv(0x23, "TLS_AES_256_GCM_SHA384"));
  const std::string header = v2(proxy_command, tcp4, v4_block() + tlv(0x01, "h2") + tlv(0x02, "a.test") + tlv(0x04, "") +
                                                         tlv(0x05, "id-1") + ssl + tlv(0xe0, "custom"));
  const Parsed parsed = parse(header);
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.consumed == header.size());
  CHECK(parsed.header.source_text() == "127.0.0.2:5555");
  CHECK(parsed.header.authority == "a.test");
  CHECK(parsed.header.ssl.present);
  CHECK(parsed.header.ssl.client == 0x07);
  CHECK(parsed.header.ssl.verify == 0);
  CHECK(parsed.header.ssl.version == "TLSv1.3");
  CHECK(parsed.header.ssl.common_name == "client.test");
  CHECK(parsed.header.ssl_verified());
}

TEST_CASE("the SSL TLV is verified only with TLS and a certificate and verify 0", "[proxy]") {
  auto verified = [](const std::string& fixed) {
    const Parsed parsed = parse(v2(proxy_command, tcp4, v4_block() + tlv(0x20, fixed)));
    REQUIRE(parsed.status == Status::done);
    REQUIRE(parsed.header.ssl.present);
    return parsed.header.ssl_verified();
  };
  CHECK(verified(std::string("\x03\0\0\0\0", 5)));         // SSL + a certificate on this connection
  CHECK(verified(std::string("\x05\0\0\0\0", 5)));         // SSL + a certificate in the session
  CHECK_FALSE(verified(std::string("\x01\0\0\0\0", 5)));   // TLS but no certificate: HAProxy still sends 0
  CHECK_FALSE(verified(std::string("\x03\0\0\0\x14", 5))); // a certificate that failed (20: unknown issuer)
  CHECK_FALSE(verified(std::string("\x00\0\0\0\0", 5)));   // plain TCP to the balancer
  CHECK_FALSE(verified(std::string("\x06\0\0\0\0", 5)));   // certificate bits without SSL
  const Parsed parsed = parse(v2(proxy_command, tcp4, v4_block() + tlv(0x20, std::string("\x03\x01\x02\x03\x04", 5))));
  CHECK(parsed.header.ssl.verify == 0x01020304);
  CHECK(parse(v2(proxy_command, tcp4, v4_block())).header.ssl_verified() == false);  // no SSL TLV at all
}

TEST_CASE("v2 TLV lengths that lie are refused and never read past the header", "[proxy]") {
  // A TLV claiming more than is left; the header's own length is honest.
  check_malformed(v2(proxy_command, tcp4, v4_block() + std::string("\x02\x00\x09", 3) + "a.test"), "TLV 0x02 at byte 28 claims 9 bytes, 6 are left");
  check_malformed(v2(proxy_command, tcp4, v4_block() + tlv(0x04, "") + "\xff\xff\xff"), "claims 65535 bytes, 0 are left");
  // A TLV header cut short by the end of the header.
  check_malformed(v2(proxy_command, tcp4, v4_block() + "\x04"), "a TLV cut off at byte 28 (1 of its 3 header bytes)");
  check_malformed(v2(proxy_command, tcp4, v4_block() + std::string("\x04\x00", 2)), "(2 of its 3 header bytes)");
  // Inside the SSL TLV: its sub-TLVs are bounded by it, not by the header.
  const std::string lying_sub = tlv(0x20, std::string("\x01\0\0\0\0", 5) + std::string("\x21\x00\x08", 3) + "TLSv1.3") + tlv(0x04, "x");
  check_malformed(v2(proxy_command, tcp4, v4_block() + lying_sub), "SSL sub-TLV 0x21 at byte 36 claims 8 bytes, 7 are left");
  check_malformed(v2(proxy_command, tcp4, v4_block() + tlv(0x20, std::string("\x01\0\0\0", 4))),
                  "the SSL TLV has 4 bytes, fewer than its 5 fixed ones");
  check_malformed(v2(proxy_command, tcp4, v4_block() + tlv(0x20, std::string("\x01\0\0\0\0\x21", 6))), "SSL sub-TLV cut off");
}

TEST_CASE("v2 TLVs the parser interprets come once and within their bounds", "[proxy]") {
  check_malformed(v2(proxy_command, tcp4, v4_block() + tlv(0x02, "a.test") + tlv(0x02, "b.test")), "a second AUTHORITY TLV");
  const std::string ssl = tlv(0x20, std::string("\x01\0\0\0\0", 5));
  check_malformed(v2(proxy_command, tcp4, v4_block() + ssl + ssl), "a second SSL TLV");
  check_malformed(v2(proxy_command, tcp4, v4_block() + tlv(0x02, std::string(256, 'a'))), "an AUTHORITY TLV of 256 bytes");
  CHECK(parse(v2(proxy_command, tcp4, v4_block() + tlv(0x02, std::string(255, 'a')))).status == Status::done);
  check_malformed(v2(proxy_command, tcp4, v4_block() + tlv(0x03, "abc")), "a CRC32C TLV of 3 bytes");
}

TEST_CASE("the CRC32C TLV is checked when present", "[proxy]") {
  CHECK(crc32c("123456789") == 0xE3069283u);  // the standard check value of CRC-32C
  CHECK(crc32c("6789", crc32c("12345")) == 0xE3069283u);
  const std::string header = with_checksum(v2(proxy_command, tcp4, v4_block() + tlv(0x03, std::string(4, '\0')) + tlv(0x02, "a.test")));
  Parsed parsed = parse(header);
  REQUIRE(parsed.status == Status::done);
  CHECK(parsed.header.checksum_checked);
  CHECK(parsed.header.authority == "a.test");

  std::string tampered = header;
  tampered[17] ^= 1;  // the source address changed in flight
  check_malformed(tampered, "CRC32C mismatch");
  std::string wrong_sum = header;
  wrong_sum[31] ^= 0x80;
  check_malformed(wrong_sum, "CRC32C mismatch");
  const std::string twice = v2(proxy_command, tcp4, v4_block() + tlv(0x03, std::string(4, '\0')) + tlv(0x03, std::string(4, '\0')));
  check_malformed(twice, "a second CRC32C TLV");
}

// --- feeding ----------------------------------------------------------------------------------

TEST_CASE("a header fed in pieces gives the same result as one fed at once", "[proxy]") {
  const std::string ssl = tlv(0x20, std::string("\x03\0\0\0\0", 5) + tlv(0x22, "cn"));
  for (const std::string& header :
       {std::string("PROXY TCP4 192.0.2.1 198.51.100.22 56324 443\r\n"), std::string("PROXY UNKNOWN\r\n"),
        std::string("PROXY TCP6 ::1 ::2 1 2\r\n"), v2(proxy_command, tcp4, v4_block()), v2(local_command, unspec, ""),
        with_checksum(v2(proxy_command, tcp4, v4_block() + tlv(0x02, "a.test") + ssl + tlv(0x03, std::string(4, '\0'))))}) {
    INFO("header: " << header);
    const std::string bytes = header + "first bytes of the client";
    const Parsed once = parse(bytes);
    REQUIRE(once.status == Status::done);
    REQUIRE(once.consumed == header.size());
    const Parsed bytewise = parse_bytewise(bytes);
    REQUIRE(bytewise.status == Status::done);
    CHECK(bytewise.consumed == header.size());
    CHECK(bytewise.header.source_text() == once.header.source_text());
    CHECK(bytewise.header.authority == once.header.authority);
    CHECK(bytewise.header.ssl_verified() == once.header.ssl_verified());
    CHECK(bytewise.header.checksum_checked == once.header.checksum_checked);

    // Two pieces split anywhere: the second piece's consumed count stops at the header's end.
    for (std::size_t split = 1; split < bytes.size(); ++split) {
      ProxyHeaderParser parser;
      const auto first = parser.feed(std::string_view(bytes).substr(0, split));
      std::size_t consumed = first.consumed;
      if (first.status == Status::need_more) consumed += parser.feed(std::string_view(bytes).substr(split)).consumed;
      CHECK(parser.status() == Status::done);
      CHECK(consumed == header.size());
    }
  }
}

TEST_CASE("once decided the parser answers the same and takes nothing", "[proxy]") {
  ProxyHeaderParser parser;
  REQUIRE(parser.feed("PROXY UNKNOWN\r\n").status == Status::done);
  const auto again = parser.feed("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
  CHECK(again.status == Status::done);
  CHECK(again.consumed == 0);
  CHECK(parser.needed() == 0);

  ProxyHeaderParser refused;
  REQUIRE(refused.feed("HELO").status == Status::malformed);
  CHECK(refused.feed("PROXY UNKNOWN\r\n").status == Status::malformed);
  CHECK(refused.needed() == 0);
}

TEST_CASE("reading only needed() bytes never reads past the header", "[proxy]") {
  for (const std::string& header : {std::string("PROXY UNKNOWN\r\n"), std::string("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
                                   v2(proxy_command, tcp4, v4_block() + tlv(0x02, "a.test")), v2(local_command, unspec, "")}) {
    INFO("header: " << header);
    const std::string stream = header + "\x16\x03\x01";  // a ClientHello that must stay in the socket
    ProxyHeaderParser parser;
    std::size_t offset = 0;
    int reads = 0;
    while (parser.status() == Status::need_more) {
      const std::size_t wanted = parser.needed();
      REQUIRE(wanted > 0);
      REQUIRE(offset + wanted <= header.size());  // never asks for a byte of the client's data
      const auto progress = parser.feed(std::string_view(stream).substr(offset, wanted));
      REQUIRE(progress.consumed == wanted);  // everything it asked for was header
      offset += wanted;
      ++reads;
    }
    CHECK(parser.status() == Status::done);
    CHECK(offset == header.size());
    CHECK(reads <= static_cast<int>(header.size()));
  }
}

TEST_CASE("the one-shot form parses what a caller peeked", "[proxy]") {
  ProxyHeader header;
  std::string problem;
  const std::string bytes = "PROXY TCP4 10.0.0.1 10.0.0.2 1000 2000\r\nrest";
  auto progress = parse_proxy_header(std::string_view(bytes).substr(0, 20), header, problem);
  CHECK(progress.status == Status::need_more);
  progress = parse_proxy_header(bytes, header, problem);
  REQUIRE(progress.status == Status::done);
  CHECK(progress.consumed == bytes.size() - 4);
  CHECK(header.source_text() == "10.0.0.1:1000");
  progress = parse_proxy_header("SSH-2.0-OpenSSH\r\n", header, problem);
  CHECK(progress.status == Status::malformed);
  CHECK_THAT(problem, Catch::StartsWith("not a PROXY protocol header"));
}

TEST_CASE("CRC32C by the CPU's instruction and by table agree", "[proxy]") {
  std::string bytes;
  for (int i = 0; i < 600; ++i) bytes += static_cast<char>(i * 131 + 7);
  for (std::size_t length = 0; length <= 300; ++length) {
    const std::string_view piece = std::string_view(bytes).substr(length, length);
    REQUIRE(crc32c(piece) == crc32c_by_table(piece));
    REQUIRE(crc32c(piece, 0x12345678) == crc32c_by_table(piece, 0x12345678));
  }
  CHECK(crc32c_by_table("123456789") == 0xE3069283u);
}
