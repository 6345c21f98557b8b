#pragma once
/// Engine: a process's serving engine. It takes clients from the one accept path (or one client
/// handed to it: a Fork child's), admits them (accept hooks, access rules), and runs their sessions
/// on one event loop. Personalities differ only in how they configure it: Single and a PreFork
/// child serve one session at a time and leave further clients in the kernel's backlog;
/// Multiplex serves thousands at once and refuses clients past max_connections.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "accept.hpp"
#include "edge_intake.hpp"
#include "metrics_engine.hpp"
#include "endpoint.hpp"
#include "netserver/engine.hpp"
#include "netserver/registry.hpp"
#include "netserver/session.hpp"
#include "room_hub.hpp"
#include "session_impl.hpp"
#include "stall_watch.hpp"

namespace netserver {

class Server;
class ServerRuntime;

/// The concurrency hint for every io_context of netserver: each runs on exactly one thread, so
/// asio's scheduler and reactor locks are switched off (measured: about 10% less CPU per echo).
inline constexpr int single_threaded = BOOST_ASIO_CONCURRENCY_HINT_UNSAFE;

/// How an Engine serves.
struct EngineOptions {
  /// Sessions served at once.
  std::size_t max_sessions = 1;
  /// At max_sessions: stop accepting (clients wait in the backlog), or accept and refuse them
  /// with "error: server busy".
  bool refuse_when_full = false;
  /// Several processes accepting on the same listeners (Multiplex workers): asked with this
  /// process's open sessions before each accept; false holds accepting for a moment so that
  /// another process takes the waiting clients. Empty: always accept.
  std::function<bool(std::size_t open)> may_accept = nullptr;
  /// Told the number of open sessions each time it changes (a worker publishes it for the
  /// parent's systemd STATUS). Empty: nobody is told.
  std::function<void(std::size_t open)> sessions_changed = nullptr;
  /// How the listeners are waited on (PreFork: one idle child woken per connection).
  Acceptor::Watch watch = Acceptor::Watch::each;
  /// The sessions' bounds; the server's (from the configuration) when not given.
  std::optional<SessionLimits> limits = std::nullopt;
  /// A service of the toolkit's own (the status listener), served beside the user's: no Server
  /// hook hears of its clients, nothing of it is counted in the metrics, its callbacks are not
  /// watched for stalls (it runs on a thread of its own).
  bool toolkit = false;
};

/// How to end the sessions when the engine stops (netserver/engine.hpp).
using StopMode = engine::StopMode;

/// The sessions of this process, owned until they end (Session::registry() to handlers).
class SessionTable final : public Registry {
 public:
  void add(std::shared_ptr<SessionImpl> session);
  void remove(SessionImpl& session);
  /// A copy of every session, for walks that may end sessions.
  std::vector<std::shared_ptr<SessionImpl>> snapshot() const;
};

class Engine {
 public:
  /// An engine on `io` for `server` (its hooks, access rules and session limits).
  Engine(Server& server, boost::asio::io_context& io, EngineOptions options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// Starts accepting on `endpoints` (through this process's own copies of the listeners).
  void listen(const std::vector<Endpoint>& endpoints);
  /// Serves a client accepted elsewhere, unless stopping.
  void serve(AcceptedClient client);
  /// Stops accepting for a while (a restart is being prepared); accepted clients stay.
  void hold_accepting();
  /// Accepts again after hold_accepting().
  void resume_accepting();
  /// Closes this process's descriptors of the listeners at once: nothing more is accepted here
  /// (the parent is gone, or a new image serves them).
  void close_listeners();
  /// True while sessions are open.
  bool has_clients() const { return table_.size() > 0; }
  /// Stops accepting and ends the sessions as `mode` says; sessions still open after `grace` are
  /// cut (forever: never). `stopped` runs once no session is left and no socket lingers. A later
  /// call replaces `stopped`, applies its `mode`, and can only bring the deadline closer.
  void stop(StopMode mode, Duration grace, std::function<void()> stopped);
  /// True once stop() was called.
  bool stopping() const { return stopping_; }
  /// Runs for every client taken, before it is admitted (a PreFork child then reports busy).
  void on_client(std::function<void()> callback) { on_client_ = std::move(callback); }
  /// Runs after every session's end, refused ones included (a PreFork child then reports idle).
  void on_session_end(std::function<void()> callback) { on_session_end_ = std::move(callback); }

  /// The sessions alive in this process.
  Registry& registry() { return table_; }
  /// The rooms of this process (local, or on the bus).
  RoomHub& rooms() { return rooms_; }
  boost::asio::io_context& io() { return io_; }
  Server& server() { return server_; }
  const SessionLimits& limits() const { return limits_; }
  /// Closed sockets still waiting for their client's EOF; a process should let them finish
  /// before it exits.
  std::size_t lingering() const { return lingering_; }

  // --- for SessionImpl -------------------------------------------------------------------------
  /// Flushes `session` after the current batch of ready events (sends made outside its own
  /// callbacks, e.g. by another session's broadcast, are written together).
  void schedule_flush(std::shared_ptr<SessionImpl> session);
  /// A session has ended and on_close ran.
  void session_ended(SessionImpl& session);
  /// A closed session's socket waits for its client's EOF (at most `linger`) ...
  void linger_started() { ++lingering_; }
  /// ... and is closed now.
  void linger_ended();
  /// A read buffer shared by every session of this process.
  std::span<char> scratch() { return scratch_; }
  /// A read delivered input (the end-of-batch flush waits while input keeps coming).
  void note_input() { ++inputs_; }
  /// Bytes read from and written to clients (netserver_received_bytes_total, _sent_).
  void count_received(std::size_t bytes) const {
    if (!options_.toolkit) engine_metrics().received_bytes.add(bytes);
  }
  void count_sent(std::size_t bytes) const {
    if (!options_.toolkit) engine_metrics().sent_bytes.add(bytes);
  }
  /// A TLS handshake ended (netserver_tls_handshakes_total).
  void count_handshake(bool ok) const {
    if (!options_.toolkit) engine_metrics().handshakes(ok ? HandshakeResult::ok : HandshakeResult::failed).add();
  }
  /// True when this engine's callbacks are marked for the stall watcher and the watchdog.
  bool watched() const { return !options_.toolkit; }
  /// The session whose handler callback runs now, or null: the sender of what rooms deliver
  /// meanwhile (room fan-out holds its input when a recipient's queue passes the mark).
  SessionImpl* acting() const { return acting_; }
  /// Makes `session` the acting one and returns the one before, restored once the callback returns.
  SessionImpl* act(SessionImpl* session) { return std::exchange(acting_, session); }

 private:
  Appetite appetite();
  void watch(ServerRuntime& runtime);
  void admit(AcceptedClient client);
  bool admitted(SessionImpl& session);
  void refuse_busy(AcceptedClient& client);
  void edge_done();
  std::size_t taken() const { return table_.size() + (intake_ ? intake_->pending() : 0); }
  void flush_scheduled();
  void check_stopped();
  void cut_after(Duration grace);

  Server& server_;
  boost::asio::io_context& io_;
  EngineOptions options_;
  SessionLimits limits_;
  SessionTable table_;
  RoomHub rooms_;  // after table_: its members go first
  std::unique_ptr<Acceptor> acceptor_;
  std::unique_ptr<EdgeIntake> intake_;  // PROXY headers and per-address limits, when configured
  bool accept_held_ = false;  // a restart is being prepared
  std::vector<std::shared_ptr<SessionImpl>> to_flush_;
  bool flush_posted_ = false;
  static constexpr int max_flush_deferrals = 3;
  int flush_deferrals_ = 0;
  std::uint64_t inputs_ = 0;  // reads and accepts completed, to tell a busy loop from an idle one
  std::uint64_t inputs_at_post_ = 0;
  std::size_t lingering_ = 0;
  SessionImpl* acting_ = nullptr;  // see acting()
  std::uint64_t next_id_ = 0;
  bool stopping_ = false;
  boost::asio::steady_timer grace_timer_;
  bool grace_armed_ = false;  // a deadline for the sessions is set
  std::function<void()> stopped_;
  std::function<void()> on_client_;
  std::function<void()> on_session_end_;
  std::vector<char> scratch_;
  bool watching_ = false;                   // this engine started the process's stall watcher
  std::unique_ptr<HeartbeatTimer> heartbeat_;  // worker_timeout: the loop's beat for the parent's watchdog
};

}  // namespace netserver
