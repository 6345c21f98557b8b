#pragma once
/// TLS for `tls://` listeners: one OpenSSL context per process, loaded from the `tls` block at
/// start-up (before binding, so that every mistake is a config error), and the TLS Transport
/// (tls_transport.hpp: OpenSSL driven on the socket) that sessions accepted on those listeners run over.

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <array>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/ssl/context.hpp>

#include "netserver/config.hpp"
#include "netserver/options.hpp"
#include "netserver/tls.hpp"
#include "transport.hpp"

namespace netserver {

/// True for a syntactically valid DNS host name: dot-separated labels of 1 to 63 ASCII letters,
/// digits, '-' (not first or last) and '_', 253 bytes at most, no trailing dot. The SNI names a
/// handler sees are such names only.
bool is_host_name(std::string_view name);

class TlsContext {
 public:
  /// Adds the tls.* keys to the schema.
  static void add_options(Options& options);
  /// Loads the certificate chain, key and settings of the `tls` block for the listeners in
  /// `tls_listeners` ("tls://127.0.0.1:8443"). Throws ConfigError naming the key and where it was
  /// set: a missing or unreadable file, a key that does not match the certificate, a bad setting,
  /// a TLS listener without tls.cert_file. An expired certificate is only warned about.
  static std::shared_ptr<TlsContext> load(const Config& config, const std::vector<std::string>& tls_listeners);
  /// The context this process's TLS sessions share (null when no listener uses TLS).
  static TlsContext* installed();
  /// Makes `context` the process's context.
  static void install(std::shared_ptr<TlsContext> context);

  /// A TLS transport over an accepted socket; its handshake runs when the session starts.
  std::shared_ptr<Transport> make_transport(Transport::Socket socket);
  /// The server that serves with this context (not a --check-config or a HUP's check): without
  /// tls.ticket_key_files, takes the ticket secret the previous image handed over (HUP), so that
  /// its clients' tickets stay valid, and keeps it for the next image. After Inheritance::take(),
  /// before the personality forks (every process of the server shares the keys).
  void keep_ticket_secret_across_restart();

  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

 private:
  explicit TlsContext(double handshake_timeout);
  void load_files(const Config& config);
  void apply_settings(const Config& config);
  void set_alpn(const std::vector<std::string>& protocols);
  void warn_if_expired(const Config& config);
  void load_ticket_keys(const Config& config);
  void load_ocsp_response(const Config& config);
  std::string ocsp_problem(const std::string& der);

 public:
  /// A session ticket key: its name (in every ticket it made), HMAC-SHA256 and AES-256-CBC keys,
  /// the 80 bytes of an nginx ssl_session_ticket_key file in that order.
  struct TicketKey {
    unsigned char name[16];
    unsigned char hmac[32];
    unsigned char aes[32];
  };
  /// OpenSSL's status callback: staples the tls.ocsp_file response while it is valid, for a
  /// client that asked for it.
  int staple_ocsp(SSL* ssl);
  /// OpenSSL's ticket key callback, for this context: 1 (or 2: renew under the current key) with
  /// the cipher and MAC set up, 0 for a ticket under no key known (a full handshake), -1 on failure.
  int ticket_key(unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int encrypt);

 private:
  /// Without files: the key of period `period` (of ticket_lifetime_ seconds), derived from the secret.
  TicketKey derived_key(long long period) const;

  boost::asio::ssl::context context_;
  double handshake_timeout_;
  std::string alpn_wire_;  // the server's protocols, length-prefixed, in preference order
  std::vector<TicketKey> ticket_files_;  // tls.ticket_key_files: the first encrypts, all decrypt
  unsigned char ticket_secret_[32];      // without files: the keys derive from it, a key per lifetime
  double ticket_lifetime_ = 43200;
  // The derived keys of the current period and the one before, made once per period (six HMACs
  // per ticket otherwise: a measurable part of a resumed handshake).
  std::array<TicketKey, 2> derived_{};
  long long derived_period_ = std::numeric_limits<long long>::min();
  std::string ocsp_response_;      // DER, stapled while valid ("" when none or no longer)
  long long ocsp_next_update_ = 0;  // when it goes stale (0: the response names no next update)
  std::string ocsp_file_;          // tls.ocsp_file, as described for the log
};

}  // namespace netserver
