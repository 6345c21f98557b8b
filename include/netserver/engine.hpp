#pragma once
/// Writing a personality of your own: the engine's interface. A personality is a Personality
/// whose loop() runs one of these (see docs/personalities.md, "Writing your own"); the toolkit
/// brings the rest -- the one accept path, sessions and their bounds, signals (TERM/INT graceful,
/// QUIT now, HUP restart keeping the port, USR1 log), supervision of children (replaced when they
/// die, a pool that cannot start stops the server), systemd notifications.
///
///   class Trio : public netserver::Personality {  // three event-loop processes of 100 clients
///     void loop(netserver::Server& server) override {
///       netserver::engine::serve_in_children(server, 3, {.max_sessions = 100, .refuse_when_full = true});
///     }
///   };
///
/// The built-in Single is serve_here with one session; Multiplex is serve_here, or
/// serve_in_children with `multiplex.workers`.

#include <cstddef>

namespace netserver {

class Server;

namespace engine {

/// How the sessions end when the server stops gracefully (TERM, INT).
enum class StopMode {
  drain,  ///< let them finish on their own (up to graceful_timeout)
  close,  ///< deliver what is queued, then close each (up to graceful_timeout)
  abort,  ///< cut them now
};

/// How one process serves on the server's listeners.
struct ServeOptions {
  /// Sessions served at once by the process.
  std::size_t max_sessions = 1;
  /// At max_sessions: accept and refuse further clients with "error: server busy" (true), or
  /// leave them waiting in the kernel's backlog (false).
  bool refuse_when_full = false;
  /// On TERM/INT.
  StopMode on_stop = StopMode::close;
};

/// Serves in this process until a signal stops it; returns after the stop.
void serve_here(Server& server, const ServeOptions& options);

/// Keeps `children` processes, each serving as serve_here would (a child that dies is replaced;
/// TTIN/TTOU add and remove one; clients are spread over them). Returns after the stop.
void serve_in_children(Server& server, std::size_t children, const ServeOptions& options);

}  // namespace engine
}  // namespace netserver
