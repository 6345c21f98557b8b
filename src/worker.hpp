#pragma once
/// Worker: a process's serving engine. It accepts on the listeners and runs sessions on one
/// event loop. Personalities differ in how they configure it: Single and a PreFork child serve one
/// session at a time and leave further clients in the kernel's backlog; Multiplex serves
/// thousands at once and refuses clients past max_connections.

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "netserver/listener.hpp"
#include "netserver/registry.hpp"
#include "netserver/session.hpp"
#include "room_hub.hpp"
#include "transport.hpp"

namespace netserver {

class Server;
class Handler;

/// The concurrency hint for every io_context of netserver: each runs on exactly one thread, so
/// asio's scheduler and reactor locks are switched off (measured: about 10% less CPU per echo).
inline constexpr int single_threaded = BOOST_ASIO_CONCURRENCY_HINT_UNSAFE;

/// How a Worker serves.
struct WorkerOptions {
  /// Sessions served at once.
  std::size_t max_sessions = 1;
  /// At max_sessions: stop accepting (clients wait in the backlog), or accept and refuse them
  /// with "error: server busy".
  bool refuse_when_full = false;
  /// Several processes accepting on the same listeners (Multiplex workers): asked with this
  /// process's open sessions before each accept; false holds accepting for 2 ms so that another
  /// process takes the waiting clients. Empty: always accept.
  std::function<bool(std::size_t open)> may_accept = nullptr;
};

/// How to end the sessions when the worker stops.
enum class StopMode {
  drain,  ///< let them finish on their own (up to the grace period)
  close,  ///< deliver what is queued, then close each (up to the grace period)
  abort,  ///< cut them now
};

class Worker {
 public:
  Worker(Server& server, boost::asio::io_context& io, WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  /// Starts accepting on the listeners (their descriptors are duplicated, the Listener keeps its own).
  void listen(const std::vector<Listener>& listeners);
  /// Serves an already accepted connection from `peer` ("127.0.0.1:5555"), unless stopping;
  /// `tls`: it came in on a tls:// listener.
  void serve(Transport::Socket socket, std::string peer, bool tls = false);
  /// Stops accepting for a while (a restart is being prepared); accepted clients stay.
  void hold_accepting();
  /// Accepts again after hold_accepting().
  void resume_accepting();
  /// True while sessions are open or accepted clients wait for a slot.
  bool has_clients() const { return registry_.size() > 0 || !parked_.empty(); }
  /// Stops accepting and ends the sessions as `mode` says; sessions still open after `grace`
  /// seconds are cut. `stopped` runs once no session is left.
  void stop(StopMode mode, double grace, std::function<void()> stopped);
  /// True once stop() was called.
  bool stopping() const { return stopping_; }
  /// Runs after every session's end, refused ones included (a PreFork child then waits for its
  /// next client).
  void on_session_end(std::function<void()> callback) { on_session_end_ = std::move(callback); }

  /// The sessions alive in this process.
  Registry& registry() { return registry_; }
  /// The rooms of this process (local, or on the bus).
  RoomHub& rooms() { return rooms_; }

  // For Session.
  boost::asio::io_context& io() { return io_; }
  Server& server() { return server_; }
  Handler& handler();
  const SessionLimits& limits() const { return limits_; }
  /// Flushes `session` after the current batch of ready events (sends made outside its own
  /// callbacks, e.g. by another session's broadcast, are written together).
  void schedule_flush(std::shared_ptr<Session> session);
  /// Called by a session once it has ended and on_close ran.
  void session_ended(Session& session);
  /// A closed session's socket waits for its client's EOF (at most `linger` seconds).
  void linger_started() { ++lingering_; }
  /// ... and is closed now.
  void linger_ended();
  /// Sockets still lingering; a process should let them finish before it exits.
  std::size_t lingering() const { return lingering_; }
  /// A read buffer shared by every session of this process.
  std::span<char> scratch() { return scratch_; }
  /// Called by a session for every read that delivered input.
  void note_input() { ++inputs_; }

 private:
  struct Acceptor;
  bool can_accept() const;
  void accept_all();
  void accept(Acceptor& acceptor);
  void on_accept(Acceptor& acceptor, const boost::system::error_code& error, Transport::Socket socket);
  void pause_accepting(const boost::system::error_code& error);
  void hold_for_balance();
  struct Accepted {
    Transport::Socket socket;
    std::string peer;
    bool tls = false;
  };
  void admit(Accepted client);
  void serve_parked();
  void refuse(Accepted& client, std::string_view reason);
  void stop_accepting();
  void flush_scheduled();
  void check_stopped();

  Server& server_;
  boost::asio::io_context& io_;
  WorkerOptions options_;
  SessionLimits limits_;
  Registry registry_;
  RoomHub rooms_;  // after registry_: its members go first
  std::vector<std::unique_ptr<Acceptor>> acceptors_;
  std::deque<Accepted> parked_;  // accepted while full (several listeners)
  boost::asio::steady_timer accept_pause_;
  bool accept_paused_ = false;   // out of descriptors: retrying after a short pause
  bool accept_held_ = false;     // a restart is being prepared
  boost::asio::steady_timer balance_pause_;
  bool balance_held_ = false;    // another worker's turn to accept (WorkerOptions::may_accept)
  bool shortage_logged_ = false;
  std::vector<std::shared_ptr<Session>> to_flush_;
  bool flush_posted_ = false;
  static constexpr int max_flush_deferrals = 3;
  int flush_deferrals_ = 0;
  std::uint64_t inputs_ = 0;          // reads completed, to tell a busy loop from an idle one
  std::uint64_t inputs_at_post_ = 0;
  std::size_t lingering_ = 0;
  std::uint64_t next_id_ = 0;
  bool stopping_ = false;
  boost::asio::steady_timer grace_timer_;
  std::function<void()> stopped_;
  std::function<void()> on_session_end_;
  std::vector<char> scratch_;
};

}  // namespace netserver

namespace netserver {

class SignalWatcher;

/// Where a worker loop runs: alone in the server's process, or as one of the Multiplex worker
/// processes a Supervisor keeps.
struct WorkerRole {
  /// A supervised worker: HUP means "finish your sessions and leave" (the parent restarts), and
  /// the parent, not this process, waits for children and talks to systemd.
  bool supervised = false;
  /// A supervised worker writes one byte ('r') here once it accepts: it started.
  int parent_channel = -1;
};

/// Serves on the server's listeners in this process until a signal stops it: TERM/INT stop
/// gracefully (`graceful` says how sessions end, within graceful_timeout), QUIT at once, HUP
/// restarts without dropping the port or the open sessions (supervised: finishes the sessions and
/// leaves), USR1 reopens the log.
void run_worker(Server& server, const WorkerOptions& options, StopMode graceful, WorkerRole role = {});

/// SIGHUP with sessions open: a copy of this process keeps them until they end (or
/// graceful_timeout), while this process execs the new image. Returns the copy's pid in the
/// restarting process, 0 in the copy itself, -1 when fork failed (logged). The copy touches no
/// session before the exec happened: if it fails, write to `abort_copy` and the copy just exits.
pid_t fork_drainer(boost::asio::io_context& io, Worker& worker, SignalWatcher& signals, double grace, int& abort_copy);

}  // namespace netserver
