#pragma once
/// The toolkit's own series (issue 21's names), registered once in the parent before anything
/// forks, for the listeners known then. The engine counts through the handles here from every
/// process; an unregistered handle (before register_engine_metrics) counts nowhere.

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "metrics_schema.hpp"

namespace netserver {

/// Why a connection was turned away before it became a session (label `reason`).
enum class RefusalReason : std::uint8_t { access, max_connections, busy, per_ip, rate, proxy, count };
/// Why a session ended (label `reason`).
enum class CloseReason : std::uint8_t { client, timeout, max_line, max_output, error, server, count };
/// How a TLS handshake ended (label `result`).
enum class HandshakeResult : std::uint8_t { ok, failed, count };

/// The label values, as /metrics shows them.
std::string_view label_of(RefusalReason reason);
std::string_view label_of(CloseReason reason);
std::string_view label_of(HandshakeResult result);

struct EngineMetrics {
  /// netserver_connections_accepted_total{listener}, one per listener (Listener order).
  std::vector<Counter> accepted;
  /// netserver_connections_refused_total{listener,reason}: refused[listener][reason].
  std::vector<std::array<Counter, static_cast<std::size_t>(RefusalReason::count)>> refused;
  /// netserver_sessions_closed_total{reason}.
  std::array<Counter, static_cast<std::size_t>(CloseReason::count)> closed;
  Gauge sessions_open;          ///< netserver_sessions_open (+1 when a session starts, -1 when it ends)
  Counter received_bytes;       ///< netserver_received_bytes_total
  Counter sent_bytes;           ///< netserver_sent_bytes_total
  /// netserver_tls_handshakes_total{result}.
  std::array<Counter, static_cast<std::size_t>(HandshakeResult::count)> tls_handshakes;
  Counter loop_stalls;          ///< netserver_loop_stalls_total (the stall watcher's thread writes it)
  Counter restarts;             ///< netserver_restarts_total (the new image adds 1 after a HUP)
  Gauge bus_up;                 ///< netserver_bus_up, GaugeMerge::min over processes with a bus
  Counter bus_published;        ///< netserver_bus_published_total
  Counter bus_received;         ///< netserver_bus_received_total
  Counter bus_reconnects;       ///< netserver_bus_reconnects_total

  /// The cells /status reads per process.
  std::uint32_t sessions_open_cell = 0;
  std::vector<std::uint32_t> closed_cells;

  Counter refused_on(std::size_t listener, RefusalReason reason) const {
    return refused[listener][static_cast<std::size_t>(reason)];
  }
  Counter closed_by(CloseReason reason) const { return closed[static_cast<std::size_t>(reason)]; }
  Counter handshakes(HandshakeResult result) const { return tls_handshakes[static_cast<std::size_t>(result)]; }
};

/// The toolkit's handles in this process (and, after fork, in its children).
EngineMetrics& engine_metrics();

/// Counts a connection accepted on / refused at the listener with index `listener` (the order
/// register_engine_metrics was given; Endpoint::metrics_index). A listener without series (the
/// status listener's, or before registration) counts nowhere.
void count_accepted(std::size_t listener);
void count_refusal(std::size_t listener, RefusalReason reason);
/// The `reason` label of a session's end as the engine words it ("client closed", "line too
/// long", "output queue full", "timed out after ...", "server stopped", ...).
CloseReason close_reason_of(std::string_view end_reason);

/// Registers the toolkit's series in `schema` (the global one in a server) for `listeners`
/// (their label values, unique: Listener::address(), or name() for systemd's sockets) and
/// fills engine_metrics(). Once per process, before MetricsStore::create. Throws
/// std::invalid_argument for duplicate listener names.
void register_engine_metrics(MetricsSchema& schema, const std::vector<std::string>& listeners);

}  // namespace netserver
