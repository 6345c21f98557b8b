#pragma once
/// The edge of the accept path: what happens to a client between accept_client() and its session
/// (or, under Fork, its child) -- written once, used by every process that accepts (an Engine, the
/// Fork parent):
///
///   1. on a listener in `proxy_protocol`: a peer outside `proxy_trusted` is refused; the PROXY
///      header is read (exactly its bytes: a TLS client's ClientHello stays in the socket) within
///      `proxy_timeout`; a malformed, truncated or late one closes that connection, logged once;
///      the client's address from the header replaces the balancer's (AcceptedClient::peer and
///      ::address), the balancer's and the rest go to AcceptedClient::proxy;
///   2. the per-address limits (`max_connections_per_ip`, `connection_rate_per_ip`) count the
///      client's address in the shared table; a refused client gets one line and is closed.
///
/// A client that passes is handed to `admitted` with edge_checked set; one that does not is closed
/// here and `dropped` runs (the caller's slot is free again).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "accept.hpp"
#include "address_limits.hpp"
#include "edge_options.hpp"

namespace netserver {

class EdgeIntake {
 public:
  struct Callbacks {
    std::function<void(AcceptedClient)> admitted;  ///< the client passed (maybe from inside start())
    std::function<void()> dropped;                 ///< the client was refused or lost, and closed
  };

  /// An intake on `io` with the server's edge settings and its shared table (null: no limits).
  EdgeIntake(boost::asio::io_context& io, const EdgeSettings& settings, AddressLimits* limits, Callbacks callbacks);
  ~EdgeIntake();
  EdgeIntake(const EdgeIntake&) = delete;
  EdgeIntake& operator=(const EdgeIntake&) = delete;

  /// True when clients need the intake at all: a listener expects a PROXY header, or a limit is set.
  static bool needed(const std::vector<Endpoint>& endpoints, const AddressLimits* limits);

  /// Runs the edge on a client just accepted. A client needing no header finishes at once.
  void start(AcceptedClient client);
  /// Clients whose PROXY header is still awaited.
  std::size_t pending() const { return pending_.size(); }
  /// Closes the clients still awaited (a stopping process); no callback runs for them.
  void close();
  /// The sockets of the clients still awaited (a child forked meanwhile closes its copies).
  std::vector<int> descriptors() const;

 private:
  struct Pending;
  void untrusted(AcceptedClient& client);
  void wait(const std::shared_ptr<Pending>& pending);
  void on_readable(const std::shared_ptr<Pending>& pending);
  void on_late(const std::shared_ptr<Pending>& pending);
  void forget(Pending& pending);
  void limit(AcceptedClient client);

  boost::asio::io_context& io_;
  const EdgeSettings& settings_;
  AddressLimits* limits_;
  Callbacks callbacks_;
  std::unordered_map<std::uint64_t, std::shared_ptr<Pending>> pending_;
  std::uint64_t next_id_ = 0;
  LogThrottle untrusted_log_;
};

}  // namespace netserver
