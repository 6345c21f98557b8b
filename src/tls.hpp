#pragma once
/// TLS for `tls://` listeners: one OpenSSL context per process, loaded from the `tls` block at
/// start-up (before binding, so that every mistake is a config error), and the TLS Transport
/// (tls_transport.hpp: OpenSSL driven on the socket) that sessions accepted on those listeners run over.

#include <memory>
#include <string>
#include <vector>

#include <boost/asio/ssl/context.hpp>

#include "netserver/config.hpp"
#include "netserver/options.hpp"
#include "netserver/tls.hpp"
#include "transport.hpp"

namespace netserver {

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

  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

 private:
  explicit TlsContext(double handshake_timeout);
  void load_files(const Config& config);
  void apply_settings(const Config& config);
  void set_alpn(const std::vector<std::string>& protocols);
  void warn_if_expired(const Config& config);

  boost::asio::ssl::context context_;
  double handshake_timeout_;
  std::string alpn_wire_;  // the server's protocols, length-prefixed, in preference order
};

}  // namespace netserver
