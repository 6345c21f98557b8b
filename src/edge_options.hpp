#pragma once
/// The configuration of the edge: the PROXY protocol (`proxy_protocol`, `proxy_trusted`,
/// `proxy_timeout`) and per-address limits (`max_connections_per_ip`, `connection_rate_per_ip`,
/// `connection_burst_per_ip`, `ipv6_prefix`): their schema, their checks against the listen
/// addresses, and the settings the accept path reads from them.

#include <sys/socket.h>

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "address_limits.hpp"
#include "netserver/access.hpp"
#include "netserver/config.hpp"
#include "netserver/listener.hpp"
#include "netserver/options.hpp"

namespace netserver {

/// Adds the edge keys to the schema (each validated alone when loaded: an entry of
/// proxy_protocol must be a listen address or `all`, one of proxy_trusted a network).
void add_edge_options(Options& options);

/// Checks the edge keys together and against `listen_texts`, the listen addresses as configured
/// (the `listen` list, or "HOST:PORT" from host and port). Throws ConfigError naming where the
/// bad value was set (file:line:column, or the command-line argument): proxy_protocol without
/// proxy_trusted, an address in proxy_protocol that is not listened on, `all` beside addresses,
/// connection_burst_per_ip without connection_rate_per_ip.
void check_edge_options(const Config& config, const std::vector<std::string>& listen_texts);

/// What the accept path needs from the edge keys (read after check_edge_options passed).
struct EdgeSettings {
  bool proxy_on_all = false;                 ///< proxy_protocol: all
  std::vector<std::string> proxy_listeners;  ///< otherwise the listen addresses expecting a header (ListenAddress::text form)
  std::vector<Network> proxy_trusted;        ///< who may send a header
  Duration proxy_timeout = std::chrono::seconds(5);  ///< how long a header may take to arrive
  int ipv6_prefix = 64;                      ///< how IPv6 peers are grouped into keys
  AddressLimitSettings limits;               ///< for AddressLimits (limits.enabled(): make a table)

  /// True when connections on the listener configured as `listen_text` start with a PROXY header.
  bool expects_proxy(std::string_view listen_text) const;
  /// True when a peer at `address` may send a PROXY header: inside a proxy_trusted network.
  /// A unix-socket peer is trusted (the socket file's permissions decide who connects).
  bool trusts(const sockaddr* address, socklen_t length) const;
};

/// The settings of a checked configuration. `process_slots` is how many processes may count
/// connections at the same time (AddressLimitSettings::process_slots).
EdgeSettings edge_settings(const Config& config, std::size_t process_slots);

}  // namespace netserver
