#include "metrics_engine.hpp"

#include <set>
#include <stdexcept>

#include <fmt/format.h>

namespace netserver {

std::string_view label_of(RefusalReason reason) {
  switch (reason) {
    case RefusalReason::access: return "access";
    case RefusalReason::max_connections: return "max_connections";
    case RefusalReason::busy: return "busy";
    case RefusalReason::per_ip: return "per_ip";
    case RefusalReason::rate: return "rate";
    case RefusalReason::proxy: return "proxy";
    case RefusalReason::count: break;
  }
  return "unknown";
}

std::string_view label_of(CloseReason reason) {
  switch (reason) {
    case CloseReason::client: return "client";
    case CloseReason::timeout: return "timeout";
    case CloseReason::max_line: return "max_line";
    case CloseReason::max_output: return "max_output";
    case CloseReason::error: return "error";
    case CloseReason::server: return "server";
    case CloseReason::count: break;
  }
  return "unknown";
}

std::string_view label_of(HandshakeResult result) { return result == HandshakeResult::ok ? "ok" : "failed"; }

EngineMetrics& engine_metrics() {
  static EngineMetrics metrics;
  return metrics;
}

void count_accepted(std::size_t listener) {
  const EngineMetrics& m = engine_metrics();
  if (listener < m.accepted.size()) m.accepted[listener].add();
}

void count_refusal(std::size_t listener, RefusalReason reason) {
  const EngineMetrics& m = engine_metrics();
  if (listener < m.refused.size()) m.refused_on(listener, reason).add();
}

CloseReason close_reason_of(std::string_view end_reason) {
  if (end_reason == "client closed") return CloseReason::client;
  if (end_reason == "line too long") return CloseReason::max_line;
  if (end_reason == "output queue full" || end_reason == "output not taken" || end_reason == "output stalled")
    return CloseReason::max_output;  // every cut of a client that does not take its output (output_stall_timeout too)
  if (end_reason.starts_with("timed out")) return CloseReason::timeout;
  if (end_reason == "server closed" || end_reason == "server stopped" || end_reason == "graceful timeout")
    return CloseReason::server;
  return CloseReason::error;
}

void register_engine_metrics(MetricsSchema& schema, const std::vector<std::string>& listeners) {
  if (std::set<std::string>(listeners.begin(), listeners.end()).size() != listeners.size())
    throw std::invalid_argument("metrics: listener names must be unique");
  constexpr bool toolkit = true;
  EngineMetrics& m = engine_metrics();
  m = EngineMetrics{};
  for (const std::string& listener : listeners)
    m.accepted.push_back(schema.counter("netserver_connections_accepted_total", "Connections accepted, per listener",
                                        {{"listener", listener}}, toolkit));
  for (const std::string& listener : listeners) {
    auto& row = m.refused.emplace_back();
    for (std::size_t r = 0; r < row.size(); ++r)
      row[r] = schema.counter("netserver_connections_refused_total",
                              "Connections turned away before they became sessions, per listener and reason",
                              {{"listener", listener}, {"reason", std::string(label_of(static_cast<RefusalReason>(r)))}},
                              toolkit);
  }
  m.sessions_open = schema.gauge("netserver_sessions_open", "Sessions open, over every process", {}, GaugeMerge::sum,
                                 toolkit);
  m.sessions_open_cell = static_cast<std::uint32_t>(schema.cells() - 1);
  for (std::size_t r = 0; r < m.closed.size(); ++r) {
    m.closed[r] = schema.counter("netserver_sessions_closed_total", "Sessions ended, per reason",
                                 {{"reason", std::string(label_of(static_cast<CloseReason>(r)))}}, toolkit);
    m.closed_cells.push_back(static_cast<std::uint32_t>(schema.cells() - 1));
  }
  m.received_bytes = schema.counter("netserver_received_bytes_total", "Bytes received from clients", {}, toolkit);
  m.sent_bytes = schema.counter("netserver_sent_bytes_total", "Bytes sent to clients", {}, toolkit);
  for (std::size_t r = 0; r < m.tls_handshakes.size(); ++r)
    m.tls_handshakes[r] = schema.counter("netserver_tls_handshakes_total", "TLS handshakes, per result",
                                         {{"result", std::string(label_of(static_cast<HandshakeResult>(r)))}}, toolkit);
  m.loop_stalls = schema.counter("netserver_loop_stalls_total",
                                 "Callbacks that held an event loop longer than stall_warning", {}, toolkit);
  m.restarts = schema.counter("netserver_restarts_total", "Restarts by HUP (a new image took over)", {}, toolkit);
  m.bus_up = schema.gauge("netserver_bus_up", "1 when every process using the bus is connected to it, else 0", {},
                          GaugeMerge::min, toolkit);
  m.bus_published = schema.counter("netserver_bus_published_total", "Messages published to the bus", {}, toolkit);
  m.bus_received = schema.counter("netserver_bus_received_total", "Messages received from the bus", {}, toolkit);
  m.bus_reconnects = schema.counter("netserver_bus_reconnects_total", "Connections to the bus made again after a loss",
                                    {}, toolkit);
}

}  // namespace netserver
