#include "metrics_exposition.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>

#include <fmt/format.h>

#include "metrics_process.hpp"
#include "succession.hpp"

namespace netserver {

namespace {

constexpr ProcessState all_states[] = {ProcessState::starting, ProcessState::idle, ProcessState::busy,
                                       ProcessState::draining};

// One line of the scoreboard, gathered once per page.
struct ProcessRow {
  const ProcessEntry* entry;
  std::int64_t sessions_open = 0;
  std::int64_t sessions_served = 0;
  ProcessStats stats;
};

struct Scoreboard {
  std::vector<std::int64_t> totals;  // per cell (MetricsStore::totals)
  std::vector<ProcessRow> rows;
  std::int64_t sessions_open = 0;
  std::int64_t sessions_served = 0;
  double now = 0;  // Unix time
};

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

Scoreboard gather(const StatusInput& input) {
  Scoreboard board;
  board.now = unix_now();
  board.totals = input.store.totals();
  const auto at = [](const std::vector<std::int64_t>& cells, std::uint32_t cell) {
    return cell < cells.size() ? cells[cell] : 0;
  };
  board.sessions_open = at(board.totals, input.engine.sessions_open_cell);
  for (std::uint32_t cell : input.engine.closed_cells) board.sessions_served += at(board.totals, cell);
  for (const ProcessEntry& entry : input.processes) {
    ProcessRow row{&entry, 0, 0, {}};
    if (const auto cells = input.store.cells_of(entry.pid)) {
      row.sessions_open = at(*cells, input.engine.sessions_open_cell);
      for (std::uint32_t cell : input.engine.closed_cells) row.sessions_served += at(*cells, cell);
    }
    row.stats = read_process_stats(entry.pid);
    board.rows.push_back(row);
  }
  return board;
}

void family_header(std::string& out, std::string_view name, std::string_view type, std::string_view help) {
  fmt::format_to(std::back_inserter(out), "# HELP {} {}\n# TYPE {} {}\n", name, escape_help(help), name, type);
}

void sample(std::string& out, std::string_view name, std::string_view labels, double value) {
  fmt::format_to(std::back_inserter(out), "{}{} {}\n", name, labels, format_sample_value(value));
}

void store_series(std::string& out, const MetricsStore& store, const std::vector<std::int64_t>& totals) {
  const auto& families = store.families();
  const auto& series = store.series();
  for (std::uint32_t f = 0; f < families.size(); ++f) {
    const MetricFamily& family = families[f];
    family_header(out, family.name, family.type == MetricType::counter ? "counter" : "gauge", family.help);
    for (std::size_t i = 0; i < series.size(); ++i) {
      if (series[i].family != f) continue;
      const std::int64_t value = totals[MetricsSchema::cell_of(i)];
      if (value != unset_gauge || family.type == MetricType::counter)  // a min/max gauge nobody set is absent
        sample(out, family.name, series[i].labels, static_cast<double>(value));
    }
  }
}

void process_series(std::string& out, const StatusInput& input, const Scoreboard& board) {
  family_header(out, "netserver_processes", "gauge", "Processes of the server, per state");
  for (ProcessState state : all_states) {
    std::size_t count = 0;
    for (const ProcessEntry& entry : input.processes) count += entry.state == state;
    sample(out, "netserver_processes", fmt::format("{{state=\"{}\"}}", state_name(state)), static_cast<double>(count));
  }
  double cpu = own_and_reaped_cpu_seconds();
  double resident = 0, fds = 0, started = 0;
  // After a HUP this image is a descendant of the first one, the anchor (succession.hpp), which
  // keeps the server's pid and start time, and whose reaped children are the images before.
  if (const pid_t anchor = Succession::anchor_pid(); anchor != ::getpid()) {
    const ProcessStats first = read_process_stats(anchor);
    if (first.alive) {
      started = first.start_time;
      cpu += first.cpu_seconds + first.reaped_cpu_seconds;
    }
  }
  for (const ProcessRow& row : board.rows) {
    if (!row.stats.alive) continue;
    if (row.entry->pid == ::getpid()) {
      if (started == 0) started = row.stats.start_time;
    } else {
      cpu += row.stats.cpu_seconds;
    }
    resident += static_cast<double>(row.stats.resident_bytes);
    fds += static_cast<double>(std::max<std::int64_t>(row.stats.open_fds, 0));
  }
  family_header(out, "process_cpu_seconds_total", "counter",
                "User and system CPU time of the server's processes, those that ended included, in seconds");
  sample(out, "process_cpu_seconds_total", "", cpu);
  family_header(out, "process_resident_memory_bytes", "gauge", "Resident memory of the server's live processes");
  sample(out, "process_resident_memory_bytes", "", resident);
  family_header(out, "process_open_fds", "gauge", "Open descriptors of the server's live processes");
  sample(out, "process_open_fds", "", fds);
  if (started > 0) {
    family_header(out, "process_start_time_seconds", "gauge", "Start time of the server, in seconds since the epoch");
    sample(out, "process_start_time_seconds", "", started);
  }
}

std::string format_uptime(double seconds) {
  if (seconds < 0) seconds = 0;
  const auto total = static_cast<long long>(seconds);
  const long long days = total / 86400, hours = total / 3600 % 24, minutes = total / 60 % 60, secs = total % 60;
  if (days > 0) return fmt::format("{}d{:02}h{:02}m", days, hours, minutes);
  if (hours > 0) return fmt::format("{}h{:02}m{:02}s", hours, minutes, secs);
  return fmt::format("{}m{:02}s", minutes, secs);
}

std::string format_mebibytes(std::int64_t bytes) { return fmt::format("{:.1f}M", static_cast<double>(bytes) / (1 << 20)); }

}  // namespace

std::string_view state_name(ProcessState state) {
  switch (state) {
    case ProcessState::starting: return "starting";
    case ProcessState::idle: return "idle";
    case ProcessState::busy: return "busy";
    case ProcessState::draining: return "draining";
  }
  return "unknown";
}

std::string format_sample_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 9.007199254740992e15)
    return fmt::format("{}", static_cast<long long>(value));
  return fmt::format("{}", value);
}

std::string json_string(std::string_view text) {
  std::string out = "\"";
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') out += {'\\', c};
    else if (byte < 0x20) out += fmt::format("\\u{:04x}", byte);
    else out += c;
  }
  return out + "\"";
}

std::string render_prometheus(const StatusInput& input) {
  const Scoreboard board = gather(input);
  std::string out;
  out.reserve(16 * 1024);
  family_header(out, "netserver_build_info", "gauge", "Always 1: the netserver version and personality serving");
  sample(out, "netserver_build_info",
         fmt::format("{{version=\"{}\",personality=\"{}\"}}", escape_label_value(input.version),
                     escape_label_value(input.personality)),
         1);
  store_series(out, input.store, board.totals);
  process_series(out, input, board);
  return out;
}

std::string render_status_text(const StatusInput& input) {
  const Scoreboard board = gather(input);
  std::string out = fmt::format("{} (netserver {}), personality {}, pid {}\n", input.program, input.version,
                                input.personality, ::getpid());
  fmt::format_to(std::back_inserter(out), "{} process(es), {} session(s) open, {} served\n\n", board.rows.size(),
                 board.sessions_open, board.sessions_served);
  fmt::format_to(std::back_inserter(out), "{:>8} {:<16} {:<9} {:>6} {:>8} {:>10} {:>9} {:>9} {:>6}\n", "PID", "ROLE",
                 "STATE", "OPEN", "SERVED", "UPTIME", "CPU", "RSS", "FDS");
  for (const ProcessRow& row : board.rows) {
    const bool alive = row.stats.alive;
    fmt::format_to(std::back_inserter(out), "{:>8} {:<16} {:<9} {:>6} {:>8} {:>10} {:>9} {:>9} {:>6}\n",
                   row.entry->pid, row.entry->role, state_name(row.entry->state), row.sessions_open,
                   row.sessions_served, alive ? format_uptime(board.now - row.stats.start_time) : "-",
                   alive ? fmt::format("{:.2f}s", row.stats.cpu_seconds) : "-",
                   alive ? format_mebibytes(row.stats.resident_bytes) : "-",
                   alive && row.stats.open_fds >= 0 ? std::to_string(row.stats.open_fds) : "-");
  }
  return out;
}

std::string render_status_json(const StatusInput& input) {
  const Scoreboard board = gather(input);
  std::string out = fmt::format(
      "{{\"program\":{},\"version\":{},\"personality\":{},\"pid\":{},\"sessions_open\":{},\"sessions_served\":{},"
      "\"processes\":[",
      json_string(input.program), json_string(input.version), json_string(input.personality), ::getpid(),
      board.sessions_open, board.sessions_served);
  for (std::size_t i = 0; i < board.rows.size(); ++i) {
    const ProcessRow& row = board.rows[i];
    const bool alive = row.stats.alive;
    fmt::format_to(std::back_inserter(out),
                   "{}{{\"pid\":{},\"role\":{},\"state\":\"{}\",\"sessions_open\":{},\"sessions_served\":{},"
                   "\"alive\":{},\"uptime_seconds\":{},\"cpu_seconds\":{},\"resident_memory_bytes\":{},\"open_fds\":{}}}",
                   i ? "," : "", row.entry->pid, json_string(row.entry->role), state_name(row.entry->state),
                   row.sessions_open, row.sessions_served, alive ? "true" : "false",
                   alive ? format_sample_value(std::round((board.now - row.stats.start_time) * 1000) / 1000) : "null",
                   alive ? format_sample_value(row.stats.cpu_seconds) : "null",
                   alive ? std::to_string(row.stats.resident_bytes) : "null",
                   alive && row.stats.open_fds >= 0 ? std::to_string(row.stats.open_fds) : "null");
  }
  return out + "]}\n";
}

}  // namespace netserver
