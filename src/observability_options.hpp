#pragma once
/// The configuration keys of the status listener, the stall detector, the watchdog and worker
/// recycling (issue 21), declared in one place: Server::add_core_options calls
/// add_observability_options, post_configure reads them with observability_settings.

#include <cstdint>
#include <string>
#include <vector>

#include "netserver/config.hpp"
#include "netserver/options.hpp"

namespace netserver {

/// status.listen, status.cidr_allow, stall_warning, worker_timeout, prefork.max_requests_jitter,
/// multiplex.max_requests.
void add_observability_options(Options& options);

/// The keys' values, checked together. (status.listen is a service's list key: see
/// Server::add_service, which also refuses an address that another service has.)
struct ObservabilitySettings {
  std::vector<std::string> status_cidr_allow;  ///< networks allowed besides loopback and unix sockets
  Duration stall_warning = std::chrono::milliseconds(500);  ///< zero: off
  Duration worker_timeout = Duration::zero();               ///< zero: off
  std::int64_t max_requests_jitter = 0;        ///< prefork: each child's max_requests + random [0, jitter]
  std::int64_t multiplex_max_requests = 0;     ///< workers: sessions a worker serves before it is replaced; 0: never
};

/// Reads the keys. Throws ConfigError (naming both keys) when worker_timeout is set below
/// stall_warning.
ObservabilitySettings observability_settings(const Config& config);

}  // namespace netserver
