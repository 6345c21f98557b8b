#pragma once
/// Endpoint: one listening socket as the engine serves it -- the bound socket, the transport its
/// scheme names (tcp, tls) and the protocol (Handler) served there. The transports of a
/// configuration are loaded once, before binding, so that a certificate that does not load is a
/// configuration error found before anything is bound.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "netserver/listener.hpp"
#include "transport.hpp"

namespace netserver {

class Config;
class Handler;
class TlsContext;

/// Makes the transport of every client accepted on a listener, holding its scheme's settings
/// (a TLS context). Shared by the listeners of one scheme.
class TransportFactory {
 public:
  virtual ~TransportFactory() = default;
  /// The transport over an accepted client socket; it starts (TLS: handshakes) when the session does.
  virtual std::shared_ptr<Transport> make(Transport::Socket socket) = 0;
  /// True when bytes written to a freshly accepted socket reach the client as they are, so that a
  /// refusal can say why in a line of text (a TLS client would only see its handshake garbled).
  virtual bool plaintext() const = 0;
};

/// The transport factory of every scheme the configured addresses use.
class TransportSchemes {
 public:
  TransportSchemes() = default;
  /// Loads what `addresses` need (the tls block for tls:// ones). Throws ConfigError naming the
  /// key and where it was set.
  static TransportSchemes load(const Config& config, const std::vector<ListenAddress>& addresses);
  /// The factory for `scheme`; throws Error for a scheme that was not loaded.
  std::shared_ptr<TransportFactory> factory(const std::string& scheme) const;
  /// The factory for the listener configured as `address` ("tls://127.0.0.1:8443"): a TLS
  /// listener's serves its own certificates (tls.certificates' `listen`).
  std::shared_ptr<TransportFactory> factory(const std::string& scheme, const std::string& address) const;
  /// For the schemes the server serves with (not a check's): takes what the previous image handed
  /// over for them (the TLS ticket secret, so that clients' tickets survive a HUP) and keeps it
  /// for the next. Once, after Inheritance::take(), before any fork.
  void keep_across_restart() const;

 private:
  std::map<std::string, std::shared_ptr<TransportFactory>> factories_;
  std::map<std::string, std::shared_ptr<TransportFactory>> tls_listeners_;  // by listen address
  std::shared_ptr<TlsContext> tls_;
};

/// A listener and how its clients are served. It outlives the Listener's descriptor (sessions
/// keep it after a stop closed the listeners).
struct Endpoint {
  int listener_fd = -1;                         ///< the Server's descriptor, while it listens
  int family = AF_UNSPEC;                       ///< AF_INET, AF_INET6 or AF_UNIX
  std::string address;                          ///< as configured: "127.0.0.1:8000", "tls://[::]:8443"
  std::string name;                             ///< as bound: "127.0.0.1:41234", "unix:/run/x.sock"
  std::shared_ptr<TransportFactory> transport;  ///< by the listener's scheme
  std::shared_ptr<Handler> handler;             ///< the protocol served on it
  bool proxy_protocol = false;                  ///< its clients start with a PROXY header (`proxy_protocol`)
  /// Its index in the metrics' `listener` labels (SIZE_MAX: counted nowhere, the status listener's).
  std::size_t metrics_index = SIZE_MAX;
};

}  // namespace netserver
