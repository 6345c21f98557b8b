#pragma once
/// What the status listener serves: /metrics in the Prometheus text format 0.0.4, /status as a
/// plain-text scoreboard for people (one line per process, Apache mod_status style) and
/// /status.json, the same for programs. Rendered in the parent from the metrics store and the
/// process table its caller keeps (the Supervisor's), reading /proc for each process.

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "metrics_engine.hpp"
#include "metrics_store.hpp"

namespace netserver {

/// A process's state on the scoreboard.
enum class ProcessState : std::uint8_t { starting, idle, busy, draining };
/// "starting", "idle", "busy", "draining".
std::string_view state_name(ProcessState state);

/// One process of the server, as its parent knows it.
struct ProcessEntry {
  pid_t pid = 0;
  std::string role;  ///< "parent", "prefork child", "worker", "fork child", "previous image", ...
  ProcessState state = ProcessState::idle;
};

/// Everything a page is made of.
struct StatusInput {
  const MetricsStore& store;
  const EngineMetrics& engine;        ///< which cells hold sessions open and sessions ended
  std::string program;                ///< the Server's name ("chat")
  std::string version;                ///< netserver's version
  std::string personality;
  std::vector<ProcessEntry> processes;  ///< every process of the server; this one (the parent) first
};

/// The Prometheus text format 0.0.4: every series of the store (HELP and TYPE once per family,
/// a family's series together), netserver_build_info, netserver_processes{state} and the
/// process_* metrics. CPU time is this process's and its reaped children's (getrusage) plus the
/// live children's, so it never goes back when a child ends; memory and descriptors are summed
/// over the live processes; the start time is this process's (kept across a restart's exec).
std::string render_prometheus(const StatusInput& input);
/// The scoreboard: a summary line, then pid, role, state, sessions open, sessions served,
/// uptime, CPU, memory and descriptors per process.
std::string render_status_text(const StatusInput& input);
/// The scoreboard as one JSON object.
std::string render_status_json(const StatusInput& input);

/// A value as the text format writes it: integers without a fraction, others shortest.
std::string format_sample_value(double value);
/// `text` as a JSON string literal, quotes included.
std::string json_string(std::string_view text);

}  // namespace netserver
