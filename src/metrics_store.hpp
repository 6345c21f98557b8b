#pragma once
/// The metrics table: one slot per process in shared memory, made by the parent before anything
/// forks. A process writes only its own slot, without locks (Counter::add is a load and a store);
/// the parent claims a slot for a child before forking it and, once it has reaped the child,
/// folds the slot's counters into the "retired" totals and frees the slot. So what a killed or
/// recycled child counted is never lost, and a gauge of a dead process (its open sessions) stops
/// counting with it.
///
/// Across a HUP the table outlives the image: its memfd is handed to the new image like the
/// listening sockets (keep_across_restart, src/restart.hpp, as "metrics" and "metrics_previous_N").
/// The new image lays out a table of its own, takes over the old one's totals and the slots of
/// its own previous self, and keeps reading the slots of the old image's children still
/// finishing their sessions until it reaps them. Counters never go backwards.
///
/// Who calls what (all in the process that made the store, "the parent", unless said):
///   take_handover()          in a restarted image, after Inheritance::take(), before
///                            close_untaken_descriptors() (ServerRuntime::post_configure)
///   create()                 once, before the first fork, after every metric is registered
///   claim() -> fork() ->     child: bind_child(slot) first thing
///                            parent: assign(slot, pid), or cancel(slot) when fork failed
///   child_exited(pid)        after waitpid() reaped a child (of this image or the previous one)
///   totals(), cells_of(), activity_of()   to expose and watch (single-threaded, in the parent's loop)

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "metrics_schema.hpp"
#include "metrics_slot.hpp"

namespace netserver {

class MetricsStore {
 public:
  /// A slot claimed for a child about to be forked; empty when none was free.
  struct Slot {
    int index = -1;
    explicit operator bool() const { return index >= 0; }
  };

  /// Lays out a table for `schema` (frozen from now on) with a slot for this process and
  /// `child_slots` more, and binds this process to its slot (what it counted so far moves in).
  /// Adopts the tables a previous image handed over: their totals, the slot of this process's
  /// previous image and those of processes not in `inherited_children` are folded now; the slots
  /// of `inherited_children` stay live until child_exited(). A table that cannot be read is
  /// logged and left alone (its counts start over). Throws Error when shared memory cannot be made.
  static std::unique_ptr<MetricsStore> create(MetricsSchema& schema, std::size_t child_slots,
                                              const std::vector<pid_t>& inherited_children = {});
  ~MetricsStore();
  MetricsStore(const MetricsStore&) = delete;
  MetricsStore& operator=(const MetricsStore&) = delete;

  /// The store made in this process (or in the parent it was forked from); null before create().
  static MetricsStore* current();

  // --- slots for children (the parent) -------------------------------------------------------

  /// Claims a free slot for a child about to be forked; `inherit_gauges` starts it with this
  /// process's gauge values (a copy that takes over this process's sessions). Empty when every
  /// slot is taken (logged once): that child's counts are then not recorded.
  Slot claim(bool inherit_gauges = false);
  /// After fork, in the parent: the slot belongs to `pid`.
  void assign(Slot slot, pid_t pid);
  /// Fork failed: the slot is free again.
  void cancel(Slot slot);
  /// `pid` was reaped: its counters join the retired totals, its slot is freed. False when no
  /// slot belongs to `pid` (not a child with a slot).
  bool child_exited(pid_t pid);

  // --- in a new child --------------------------------------------------------------------------

  /// First thing after fork in the child: from now on this process writes `slot` (an empty slot:
  /// a private row nobody reads). Closes the child's copies of the table descriptors.
  void bind_child(Slot slot);

  // --- reading (the parent) ----------------------------------------------------------------------

  /// The series of this table: the schema's, then counters carried from a previous image that
  /// the schema no longer has. Series i is cell i + 1.
  const std::vector<MetricFamily>& families() const { return families_; }
  const std::vector<MetricSeries>& series() const { return series_; }
  /// Per cell: a counter's retired total plus every live slot; a gauge merged over the live
  /// slots (unset_gauge for a min/max gauge no live process set).
  std::vector<std::int64_t> totals() const;
  /// A live process's own cells (this table's numbering); nullopt when `pid` has no slot.
  std::optional<std::vector<std::int64_t>> cells_of(pid_t pid) const;
  /// A live process's activity record (stall_watch.hpp, watchdog.hpp); null when it has no slot.
  const ActivityRecord* activity_of(pid_t pid) const;
  /// True when this image took over a previous image's table (it was restarted by HUP).
  bool restarted() const { return restarted_; }
  /// Slots for children (what create() was given).
  std::size_t child_slots() const;

  // --- restart -----------------------------------------------------------------------------------

  /// In an image a restart exec'd: takes the tables the previous image kept across the exec, for
  /// create() to adopt. Call after Inheritance::take() and before close_untaken_descriptors().
  static void take_handover();
  /// What this store keeps across a restart's exec: (name, descriptor) pairs.
  std::vector<std::pair<std::string, int>> kept_descriptors() const;

 private:
  struct Table;
  /// How a cell's per-process values merge (from its family).
  enum class CellKind : std::uint8_t { sink, counter, gauge_sum, gauge_min, gauge_max };

  MetricsStore() = default;
  static std::unique_ptr<Table> map_previous(int fd);
  void carry_series_of(const Table& previous);
  void lay_out(std::size_t child_slots);
  void bind_self(const MetricsSchema& schema);
  void adopt(std::unique_ptr<Table> previous, const std::vector<pid_t>& inherited_children);
  void fold(Table& table, int slot);
  std::int64_t initial_value(std::uint32_t cell, bool inherit_gauges) const;
  void keep_descriptors();
  void forget_kept_descriptors();

  std::unique_ptr<Table> own_;
  std::vector<std::unique_ptr<Table>> previous_;  // adopted tables with live slots
  std::vector<MetricFamily> families_;
  std::vector<MetricSeries> series_;
  std::vector<CellKind> kinds_;                    // per cell
  std::vector<int> free_slots_;
  std::size_t kept_previous_ = 0;  // "metrics_previous_N" names registered
  bool full_logged_ = false;
  bool restarted_ = false;
};

/// The directory text of a table (exposed for tests): one line per family, then one per series.
std::string directory_text(const std::vector<MetricFamily>& families, const std::vector<MetricSeries>& series);
/// Parses directory_text(); false (with `problem`) on anything malformed.
bool parse_directory(std::string_view text, std::vector<MetricFamily>& families, std::vector<MetricSeries>& series,
                     std::string& problem);

}  // namespace netserver
