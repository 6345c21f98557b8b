#pragma once
/// The loop of a process that serves clients itself -- Single, Multiplex, a Multiplex worker --
/// and what each signal does to it: TERM/INT stop gracefully (`graceful` says how sessions end,
/// within graceful_timeout), QUIT at once, HUP restarts without dropping the port or the open
/// sessions (a new image starts beside this one and takes over: succession.hpp; a supervised
/// worker: finishes its sessions and leaves), USR1 reopens the log.

#include <sys/types.h>

#include "engine.hpp"

namespace netserver {

class Server;
class SignalWatcher;

/// Where a serving loop runs: alone in the server's process, or as one of the worker processes
/// a Supervisor keeps.
struct LoopRole {
  /// A supervised worker: HUP means "finish your sessions and leave" (the parent restarts), and
  /// the parent, not this process, restarts and talks to systemd.
  bool supervised = false;
  /// A supervised worker reports idle here once it accepts: it started. Its EOF means the parent
  /// is gone.
  int parent_channel = -1;
};

/// Serves on the server's endpoints in this process until a signal stops it (engine::serve_here).
void run_serving_loop(Server& server, const EngineOptions& options, StopMode graceful, LoopRole role = {});

}  // namespace netserver
