#pragma once
/// TLS for `tls://` listeners: the `tls` block loaded at start-up (before binding, so that every
/// mistake is a config error) into an OpenSSL context per list of certificates the listeners
/// serve, the certificate chosen by the client's requested name (SNI), and the TLS Transport
/// (tls_transport.hpp: OpenSSL driven on the socket) that sessions accepted on those listeners run over.

#include <openssl/evp.h>
#include <openssl/ssl.h>

#include <array>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
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
  /// Loads the certificates, keys and settings of the `tls` block for the listeners in
  /// `tls_listeners` ("tls://127.0.0.1:8443"): tls.cert_file/key_file, or the tls.certificates
  /// list, each listener with the entries that serve it. Throws ConfigError naming the key and
  /// where it was set: a missing or unreadable file, a key that does not match the certificate, a
  /// bad setting, a TLS listener without a certificate, both forms at once. An expired
  /// certificate is only warned about.
  static std::shared_ptr<TlsContext> load(const Config& config, const std::vector<std::string>& tls_listeners);

  /// A TLS transport over a socket accepted on listener `listener` (an index of served_for); its
  /// handshake runs when the session starts.
  std::shared_ptr<Transport> make_transport(Transport::Socket socket, std::size_t listener);
  /// Which certificates the listener configured as `listen_text` serves (for make_transport).
  std::size_t served_for(const std::string& listen_text) const;
  /// The server that serves with this context (not a --check-config or a HUP's check): without
  /// tls.ticket_key_files, takes the ticket secret the previous image handed over (HUP), so that
  /// its clients' tickets stay valid, and keeps it for the next image. After Inheritance::take(),
  /// before the personality forks (every process of the server shares the keys).
  void keep_ticket_secret_across_restart();

  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  /// A certificate chain and its key as loaded from one cert_file/key_file.
  struct Certificate {
    std::string described;               ///< where its cert_file was configured, for messages
    std::shared_ptr<X509> leaf;          ///< the server's certificate
    std::shared_ptr<EVP_PKEY> key;       ///< its private key
    std::shared_ptr<STACK_OF(X509)> chain;  ///< the intermediates after it in cert_file
    std::vector<std::string> names;      ///< its DNS names (subjectAltName; the CN when it has none), lower-case, sorted
    std::vector<std::string> listeners;  ///< the listeners it serves (`listen`, normalised); empty: every TLS listener
  };
  /// The certificates served for one set of names: one per key type (ECDSA and RSA), OpenSSL
  /// choosing by the client's signature algorithms.
  struct Site {
    std::vector<std::string> names;              ///< the names, as in each of its certificates
    std::vector<const Certificate*> certificates;  ///< in configuration order
    std::array<unsigned char, 32> id_context{};  ///< its session id context: a session resumes on its own site only
    /// True when a client asking for `name` (lower-case) gets this site: one of its names, or `*.`
    /// and one label less when `wildcard`.
    bool serves(std::string_view name, bool wildcard) const;
  };
  /// The context of the listeners that serve one list of certificates.
  struct Served {
    boost::asio::ssl::context context{boost::asio::ssl::context::tls_server};  ///< its settings and first site
    std::vector<Site> sites;  ///< in configuration order; the first is loaded in the context: no name or an unknown one
    std::vector<const Certificate*> list;  ///< the certificates it serves, in configuration order
    /// The site for the requested name ("" for none): an exact name first, then a wildcard, else the first.
    const Site& site_for(std::string_view name) const;
  };

 private:
  explicit TlsContext(double handshake_timeout);
  void load_certificates(const Config& config, const std::vector<std::string>& tls_listeners);
  void serve(const Config& config, const std::vector<std::string>& tls_listeners);
  void configure(const Config& config, Served& served);
  void load_client_ca(const Config& config, SSL_CTX* native);
  void apply_settings(const Config& config, SSL_CTX* native);
  void set_alpn(SSL_CTX* native, const std::vector<std::string>& protocols);
  void warn_if_expired();
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
  /// client that asked for it and gets the certificate it is about.
  int staple_ocsp(SSL* ssl);
  /// OpenSSL's ticket key callback, for this context: 1 (or 2: renew under the current key) with
  /// the cipher and MAC set up, 0 for a ticket under no key known (a full handshake), -1 on failure.
  int ticket_key(unsigned char* name, unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac, int encrypt);

 private:
  /// Without files: the key of period `period` (of ticket_lifetime_ seconds), derived from the secret.
  TicketKey derived_key(long long period) const;

  std::vector<Certificate> certificates_;       // in configuration order; the first is tls.ocsp_file's
  std::vector<std::unique_ptr<Served>> served_;  // one per distinct list of certificates
  std::vector<std::pair<std::string, std::size_t>> served_by_listener_;  // listen text -> served_ index
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
