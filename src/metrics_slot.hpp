#pragma once
/// The layout of the metrics table in shared memory (metrics_store.hpp). One table per program
/// image: a header, a directory naming the series (so that a new image after a HUP can read the
/// table of the old one whatever its schema), the totals of processes that ended ("retired"),
/// then one slot per process. Every field another process may read while it changes is a
/// lock-free atomic (address-free, so valid across processes).

#include <atomic>
#include <cstdint>

namespace netserver {

static_assert(std::atomic<std::int64_t>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free &&
                  std::atomic<std::int32_t>::is_always_lock_free,
              "the metrics table needs lock-free 64-bit atomics");

/// What a process's event loop is doing, written by that process only: its loop thread marks
/// callbacks and beats, its stall watcher thread reports stalls. Read by the stall watcher, by
/// the process's own SIGABRT handler, and by the parent's watchdog.
struct ActivityRecord {
  /// (callback sequence << 8) | callback code (Callback, stall_watch.hpp); code 0 between
  /// callbacks. The sequence tells two calls of the same callback apart.
  std::atomic<std::uint64_t> state{0};
  /// The ActivitySubject (session) of the callback running: an address in the writing process,
  /// dereferenced only there.
  std::atomic<std::uintptr_t> subject{0};
  /// CLOCK_MONOTONIC nanoseconds of the loop's last beat; 0 while the process waits outside its
  /// loop on purpose (an idle PreFork child) and is not expected to beat.
  std::atomic<std::int64_t> heartbeat_ns{0};

  // The stall watcher's report of the stall in progress (a seqlock: `report_sequence` is odd
  // while it writes), so that the parent can say what a stuck process was doing.
  std::atomic<std::uint64_t> report_sequence{0};
  std::atomic<std::uint64_t> report_state{0};       ///< the `state` that stalled
  std::atomic<std::int64_t> report_since_ns{0};      ///< CLOCK_MONOTONIC, when the watcher first saw it
  std::atomic<std::uint64_t> report_session{0};     ///< its session id (0: no session)
  static constexpr std::size_t peer_words = 8;
  std::atomic<std::uint64_t> report_peer[peer_words]{};  ///< its peer, NUL-padded (63 bytes at most)
};

/// The fixed part of a process's slot; the cells follow at SlotHeader's size.
struct alignas(64) SlotHeader {
  /// The process writing this slot; 0: free; -1: claimed for a child not forked yet.
  std::atomic<std::int32_t> pid{0};
  ActivityRecord activity;
};

/// The table's first bytes. Written once by the image that made the table; read by the next
/// image after a HUP, which checks every field against the mapping's size before use.
struct StoreHeader {
  char magic[8];                    ///< "nsmetric"
  std::uint32_t layout_version;     ///< store_layout_version
  std::uint32_t cells;              ///< cells per slot (series + the sink)
  std::uint32_t slots;              ///< slot count
  std::uint32_t slot_bytes;         ///< distance between slots (a multiple of 64)
  std::uint64_t directory_offset;   ///< the directory text (metrics_store.cpp)
  std::uint64_t directory_bytes;
  std::uint64_t retired_offset;     ///< `cells` atomic int64: what ended processes counted
  std::uint64_t slots_offset;       ///< the first slot
  std::uint64_t total_bytes;        ///< the mapping's size
};

namespace detail {
/// This process's activity record: its slot's once the store exists (MetricsStore binds it),
/// before that (or without a slot) a private one nobody else reads.
extern ActivityRecord* current_activity;
/// The private record.
extern ActivityRecord unwatched_activity;
}  // namespace detail

inline constexpr char store_magic[8] = {'n', 's', 'm', 'e', 't', 'r', 'i', 'c'};
inline constexpr std::uint32_t store_layout_version = 1;

}  // namespace netserver
