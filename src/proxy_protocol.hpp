#pragma once
/// The PROXY protocol, versions 1 and 2 (HAProxy's doc/proxy-protocol.txt): the header a load
/// balancer writes before a client's first byte to say which client the connection carries.
/// A bounded, incremental parser: it is fed the bytes as they arrive, takes no byte past the
/// header, and answers need-more, done or malformed (with a reason that is safe to log). How long
/// a header may take to arrive is the caller's timeout (`proxy_timeout`), not the parser's.

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace netserver {

/// What a PROXY header said about the connection it came on.
struct ProxyHeader {
  /// `proxy`: relayed on behalf of a client; `local`: the balancer's own connection (a health
  /// check), to be taken with the connection's own addresses.
  enum class Command { proxy, local };

  int version = 0;                   ///< 1 or 2
  Command command = Command::proxy;  ///< v1 headers are always `proxy`
  /// True when the header names the client: `source` and `destination` are set. False for
  /// LOCAL, for v1 UNKNOWN and for a v2 header whose family or transport is AF_UNSPEC, UNSPEC
  /// or DGRAM: the spec says to use the connection's own addresses then, and so must the caller.
  bool has_addresses = false;
  sockaddr_storage source{};         ///< the client (AF_INET, AF_INET6 or AF_UNIX)
  socklen_t source_length = 0;       ///< bytes of `source` in use (0 without addresses)
  sockaddr_storage destination{};    ///< the address the client connected to, on the balancer
  socklen_t destination_length = 0;  ///< bytes of `destination` in use
  /// PP2_TYPE_AUTHORITY: the host name the client asked the balancer for (its TLS SNI), at most
  /// 255 bytes, exactly as sent: any bytes, so escape it before logging. "" when absent.
  std::string authority;

  /// Bits of Ssl::client (the spec's PP2_CLIENT_*).
  static constexpr std::uint8_t client_ssl = 0x01;        ///< the client spoke TLS to the balancer
  static constexpr std::uint8_t client_cert_conn = 0x02;  ///< it sent a certificate on this connection
  static constexpr std::uint8_t client_cert_sess = 0x04;  ///< it sent one in this TLS session
  /// The PP2_TYPE_SSL TLV (v2 only): how the client's TLS connection to the balancer went.
  struct Ssl {
    bool present = false;       ///< the TLV was in the header
    std::uint8_t client = 0;    ///< client_ssl | client_cert_conn | client_cert_sess
    std::uint32_t verify = 0;   ///< 0 when the certificate verified (also 0 when none was sent)
    std::string version;        ///< PP2_SUBTYPE_SSL_VERSION ("TLSv1.3"), as sent; "" when absent
    std::string common_name;    ///< PP2_SUBTYPE_SSL_CN of the client certificate, as sent
  };
  Ssl ssl;                       ///< the SSL TLV (ssl.present says whether there was one)
  bool checksum_checked = false; ///< a PP2_TYPE_CRC32C TLV was present (and matched: else malformed)

  /// `source` in the project's text form (format_address): "127.0.0.2:5555", "[::1]:5555",
  /// "unix:/path" (a unix path's control and non-ASCII bytes escaped as \xNN); "" without
  /// addresses. Formatted on each call: parsing does not pay for text nobody reads.
  std::string source_text() const;
  /// `destination` in the same form.
  std::string destination_text() const;

  /// True when the client spoke TLS to the balancer, presented a certificate and the balancer
  /// verified it. `verify == 0` alone does not say so: HAProxy sends 0 when no certificate came.
  bool ssl_verified() const {
    return ssl.present && (ssl.client & client_ssl) && (ssl.client & (client_cert_conn | client_cert_sess)) &&
           ssl.verify == 0;
  }
};

/// Reads one PROXY header from the bytes of a connection, fed in pieces as they arrive.
/// Not thread-safe; one parser per connection. A v2 header longer than `max_v2_bytes` (the 16
/// fixed bytes, the addresses and the TLVs) is malformed; a v1 header is at most 107 bytes.
class ProxyHeaderParser {
 public:
  /// Where the header stands.
  enum class Status { need_more, done, malformed };
  /// The answer to one feed().
  struct Progress {
    Status status;         ///< need_more, done or malformed
    /// Bytes of this feed's input that belong to the header. On `done` what follows them is the
    /// client's first bytes; on `need_more` it is all of them; on `malformed`, 0 (drop it all).
    std::size_t consumed;
  };

  static constexpr std::size_t v1_max_bytes = 107;         ///< the spec's longest v1 line, CRLF included
  static constexpr std::size_t default_max_v2_bytes = 4096; ///< 16 + addresses + TLVs, by default
  static constexpr std::size_t v2_fixed_bytes = 16;         ///< signature, version/command, family, length

  /// A parser for one connection's header.
  explicit ProxyHeaderParser(std::size_t max_v2_bytes = default_max_v2_bytes);

  /// Takes the next bytes that arrived. Once done or malformed, further calls return the same
  /// status and consume nothing.
  Progress feed(std::string_view bytes);
  /// Where the header stands after the last feed().
  Status status() const { return status_; }
  /// The header; meaningful once status() is done.
  const ProxyHeader& header() const { return header_; }
  /// Why the header was refused, once status() is malformed: "PROXY v1: bad source port
  /// \"080\"". Printable ASCII only (bytes from the peer escaped as \xNN) and at most ~200 bytes.
  const std::string& problem() const { return problem_; }
  /// How many more bytes the caller may read without reading past the header: reading at most
  /// this many never takes a byte of the client's own data (a TLS listener must leave the
  /// ClientHello in the socket). 0 once done or malformed. For v1 it can be as small as 1 or 2
  /// near the line end: peek (MSG_PEEK) and parse_proxy_header() are the cheaper way there.
  std::size_t needed() const;

 private:
  std::size_t limit() const;

  std::size_t max_v2_bytes_;
  Status status_ = Status::need_more;
  std::string pending_;  // the header's bytes from earlier feeds, when it spans several
  ProxyHeader header_;
  std::string problem_;
};

/// One-shot form, for a caller that keeps (or peeks) every byte received so far: parses the
/// header at the start of `bytes`. `consumed` on done is the header's length; need_more means
/// "call again with more bytes"; on malformed `problem` says why. Same rules as the parser.
ProxyHeaderParser::Progress parse_proxy_header(std::string_view bytes, ProxyHeader& header, std::string& problem,
                                               std::size_t max_v2_bytes = ProxyHeaderParser::default_max_v2_bytes);

/// CRC32C (Castagnoli, RFC 4960 appendix B) of `bytes`, continuing from `crc` (0 to start): the
/// checksum of the PP2_TYPE_CRC32C TLV.
/// Uses the CPU's CRC32 instruction where there is one (SSE 4.2).
std::uint32_t crc32c(std::string_view bytes, std::uint32_t crc = 0);
/// The same, by table only (the tests compare the two).
std::uint32_t crc32c_by_table(std::string_view bytes, std::uint32_t crc = 0);

}  // namespace netserver
