#pragma once
/// What the kernel says about a process (from /proc): CPU time, memory, descriptors, start time.
/// The parent reads its children's; /metrics sums them, /status shows them per process.

#include <sys/types.h>

#include <cstdint>

namespace netserver {

/// One process's figures; `alive` false when /proc has no such process (it ended meanwhile).
struct ProcessStats {
  bool alive = false;
  double cpu_seconds = 0;           ///< user + system time
  double reaped_cpu_seconds = 0;    ///< user + system time of the children it waited for
  std::int64_t resident_bytes = 0;  ///< resident set size
  std::int64_t open_fds = 0;        ///< entries of /proc/PID/fd (-1: not readable)
  double start_time = 0;            ///< Unix time the process started (exec keeps it)
};

/// Reads /proc/PID/stat and /proc/PID/fd.
ProcessStats read_process_stats(pid_t pid);

/// CPU seconds of this process and of every child it has reaped (getrusage): with the live
/// children's time added, a total that never goes back when a child ends.
double own_and_reaped_cpu_seconds();

}  // namespace netserver
