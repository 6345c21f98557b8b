#pragma once
/// An application's own metrics, exposed beside the toolkit's on the status listener's /metrics
/// (`status.listen`) in the Prometheus text format.
///
/// Register every metric before the server lays out its table -- in main(), in a Handler's
/// constructor, or in a hook up to post_bind_hook -- with every label value it will ever have.
/// From pre_loop_hook on, the table exists and counting goes to it.
/// Then count from any process of the server (the parent, a PreFork child, a Multiplex worker, a
/// Fork child): each process writes its own row of a table in shared memory, without locks, and
/// /metrics shows the sum over the processes. What a process counted stays in the sums after it
/// ended -- killed, recycled, or replaced by a restart (HUP) -- so counters never go backwards.
///
///   const netserver::Counter relayed =
///       netserver::register_counter("chat_messages_relayed_total", "chat lines passed on to a room");
///   const netserver::Gauge members =
///       netserver::register_gauge("chat_room_members", "clients in a chat room", {{"room", "chat"}});
///   ...
///   relayed.add();          // in on_line
///   members.add(1);         // in on_connect; members.add(-1) in on_close
///
/// Writing is a plain load and store of one 64-bit cell (about a nanosecond), so a cell has one
/// writer at a time: call add() and set() on the thread that runs the process's event loop --
/// where every Handler callback runs -- or, from a thread of your own, only for metrics no other
/// thread of that process writes.

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace netserver {

/// The labels of one series, names and values, fixed at registration: {{"room", "lobby"}}.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

/// How a gauge's per-process values make the one value /metrics shows. A process that ended
/// no longer takes part (its open sessions, its members are gone with it).
enum class GaugeMerge {
  sum,  ///< the sum over the live processes (sessions open, members of a room)
  min,  ///< the smallest value a live process set (1 only when every process says "up")
  max,  ///< the largest value a live process set
};

namespace detail {
/// This process's row of the metrics table, one cell per series; cell 0 takes the writes of
/// handles that were never registered. Set up by the toolkit; not for applications.
extern std::atomic<std::int64_t>* metric_cells;
/// A series' cell in every process's row.
struct CellIndex {
  std::uint32_t value = 0;  ///< the cell's index in a row
};
}  // namespace detail

/// A count that only goes up, summed over the server's processes. A small value type: copy it
/// freely. A default-constructed Counter counts nowhere.
class Counter {
 public:
  Counter() = default;
  /// Made by register_counter.
  explicit Counter(detail::CellIndex cell) : cell_(cell.value) {}
  /// Adds `n` in this process's row (one writer per cell: see the file comment).
  void add(std::uint64_t n = 1) const noexcept {
    std::atomic<std::int64_t>& cell = detail::metric_cells[cell_];
    cell.store(cell.load(std::memory_order_relaxed) + static_cast<std::int64_t>(n), std::memory_order_relaxed);
  }

 private:
  std::uint32_t cell_ = 0;
};

/// A value that goes up and down; each process holds its own, merged as registered (GaugeMerge).
/// A default-constructed Gauge writes nowhere.
class Gauge {
 public:
  Gauge() = default;
  /// Made by register_gauge.
  explicit Gauge(detail::CellIndex cell) : cell_(cell.value) {}
  /// Sets this process's value.
  void set(std::int64_t value) const noexcept { detail::metric_cells[cell_].store(value, std::memory_order_relaxed); }
  /// Adds `delta` (negative to lower it) to this process's value; only for GaugeMerge::sum
  /// gauges and those set() before.
  void add(std::int64_t delta) const noexcept {
    std::atomic<std::int64_t>& cell = detail::metric_cells[cell_];
    cell.store(cell.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
  }

 private:
  std::uint32_t cell_ = 0;
};

/// Registers a counter series. `name` follows Prometheus ([a-zA-Z_:][a-zA-Z0-9_:]*), ends in
/// "_total" and does not start with "netserver_" or "process_" (the toolkit's); `help` is one
/// line. Several series of one name differ in their label values and share help and label names.
/// Throws std::invalid_argument for a bad name, label or a series registered twice, and
/// std::logic_error once the server laid out its table (after post_bind_hook).
Counter register_counter(std::string_view name, std::string_view help, const MetricLabels& labels = {});

/// Registers a gauge series; the rules of register_counter apply, except that a gauge's name
/// does not end in "_total".
Gauge register_gauge(std::string_view name, std::string_view help, const MetricLabels& labels = {},
                     GaugeMerge merge = GaugeMerge::sum);

}  // namespace netserver
