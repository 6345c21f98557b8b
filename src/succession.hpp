#pragma once
/// Succession: how a HUP replaces the running image without ever losing the service (nginx's
/// model: the new image starts beside the old one, which lets go only once the new one serves).
///
///   1. The image that serves checks the configuration, binds what it adds, and starts the new
///      image as a child process of its own, handing it the listening sockets; it goes on
///      serving -- accepting too -- meanwhile.
///   2. The new image starts up completely and says "ready" once it serves (its loop accepts, or
///      its first child does). Only then does the old image let go: it closes its descriptors of
///      the listeners and finishes its sessions (or its children's) as restart_drain_timeout says,
///      passing on to its successor the signals it gets meanwhile.
///   3. A new image that does not report ready within restart_timeout -- a configuration or a
///      certificate that stopped loading between the check and the start, a broken executable, a
///      crash -- is killed if still alive, and the old image carries on, having logged why.
///
/// The first image of a server is its *anchor*: the process the world knows (the pid file,
/// systemd's MAINPID, a shell's $!, a container's pid 1) keeps its pid for the server's life.
/// Once it has handed over and its own sessions are done, it only relays signals to the image
/// serving now, reaps, and exits with the server. Every new image tells the anchor it serves,
/// over a pipe inherited down the line, so the anchor always knows whom to signal.

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "netserver/options.hpp"

namespace netserver {

class ServerRuntime;

/// A new image on trial: started as a child, it must report ready within a bound.
class Successor {
 public:
  /// Runs once, from the loop: true when the new image serves, false when it did not come up
  /// (logged, with how it ended).
  using Outcome = std::function<void(bool ready)>;

  /// Starts the new image (fork + exec, the listening sockets handed over). Check started()
  /// afterwards: false when it could not be started (logged).
  Successor(boost::asio::io_context& io, ServerRuntime& runtime, Duration timeout, Outcome outcome);
  ~Successor();
  Successor(const Successor&) = delete;
  Successor& operator=(const Successor&) = delete;

  bool started() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  /// True until the outcome ran.
  bool on_trial() const { return static_cast<bool>(outcome_); }
  /// Waits for the new image without blocking (the owner's SIGCHLD). One that ends on trial fails
  /// the trial; true once it was reaped.
  bool reap();
  bool reaped() const { return reaped_; }
  /// waitpid's status once reaped.
  int exit_status() const { return exit_status_; }
  /// Gives up a trial (a stop arrived meanwhile): the new image is killed and reaped.
  void abandon();

 private:
  void read_ready();
  void decide(bool ready, const std::string& why);

  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_status_ = 0;
  boost::asio::posix::stream_descriptor ready_;  // the new image writes "ready\n" here
  boost::asio::steady_timer deadline_;
  Outcome outcome_;
  char word_[16];
};

/// One image's part in the succession, for the loop of whatever serves in it (the in-process
/// loop, or a Supervisor).
class Succession {
 public:
  struct Hooks {
    /// The successor serves: stop accepting and finish this image's sessions or children
    /// (restart_drain_timeout); the loop ends when they are done.
    std::function<void()> let_go;
  };
  Succession(boost::asio::io_context& io, ServerRuntime& runtime, Hooks hooks);
  ~Succession();

  /// HUP: starts a new image (unless one is on trial already), or -- after this image handed
  /// over -- passes the HUP on to the image serving now.
  void hup();
  /// True once a successor serves.
  bool handed_over() const { return handed_over_; }
  /// After the hand-over: passes `signal` on to the image serving now (nothing before).
  void forward(int signal);
  /// SIGCHLD: reaps the successor if it ended.
  void reap();
  /// A stop began: a successor on trial is abandoned; after the hand-over the stop is passed on.
  void stop(int signal);

  // --- in a new image ---------------------------------------------------------------------------
  /// Reads and removes from the environment what the image that started this one passed (its
  /// ready descriptor, the anchor's pipe). Called once, early, by Inheritance::take().
  static void take_environment();
  /// This process is the anchor of its server: no image started it.
  static bool is_anchor();
  /// The anchor's pid: the server's, whichever image serves.
  static pid_t anchor_pid();
  /// Once this image serves: tells the image that started it and the anchor. Idempotent.
  static void announce_serving();

  // --- in the anchor, after its own loop ended because it handed over ------------------------
  /// Relays signals to the image serving now and reaps until every image has ended. Returns the
  /// server's exit status: 0 after a stop, 1 when the serving image died on its own.
  static int relay(ServerRuntime& runtime);

 private:
  void watch_anchor_pipe();
  void start_successor();

  boost::asio::io_context& io_;
  ServerRuntime& runtime_;
  Hooks hooks_;
  std::unique_ptr<Successor> successor_;
  bool handed_over_ = false;
  bool hup_pending_ = false;  // a HUP arrived while a new image was on trial
  std::unique_ptr<boost::asio::posix::stream_descriptor> anchor_pipe_;  // the anchor reads announcements
  char announcements_[256];
};

}  // namespace netserver
