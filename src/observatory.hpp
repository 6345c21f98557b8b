#pragma once
/// Observatory: what a running server shows of itself, wired once for every personality. It owns
/// the metrics table (metrics_store.hpp), made before anything forks, and the status listener
/// (`status.listen`, status_http.hpp), which it serves on a thread and event loop of its own in
/// the process that owns the listeners -- so /metrics and /status answer while that process's
/// loop, or every worker, is stuck in a callback.
///
/// Threads: the process's loop thread claims, assigns and folds slots (the Supervisor) and
/// publishes the process table; the status thread renders. Both go through one mutex, taken on
/// a spawn, a reap or a render only -- never on the hot path, where counting is a plain store
/// into the process's own slot. A fork waits until the status thread is between two handlers
/// (pthread_atfork): a child must not inherit a lock, or a half-made allocation, of a thread it
/// does not have (the log's lock; an allocator without fork handlers, such as AddressSanitizer's).

#include <sys/types.h>
#include <unistd.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "endpoint.hpp"
#include "metrics_exposition.hpp"
#include "metrics_store.hpp"
#include "observability_options.hpp"

namespace netserver {

class Engine;
class ServerRuntime;

class Observatory {
 public:
  explicit Observatory(ServerRuntime& runtime);
  ~Observatory();
  Observatory(const Observatory&) = delete;
  Observatory& operator=(const Observatory&) = delete;

  /// Reads the keys (stall_warning, worker_timeout, status.cidr_allow); after configure.
  void configure(const Config& config);
  const ObservabilitySettings& settings() const { return settings_; }

  /// At the end of the post_bind step (after post_bind_hook, the last moment an application may
  /// register metrics; after detaching; before pre_loop_hook and anything that forks): registers
  /// the toolkit's series for `listeners` (label values), lays out the table (adopting a previous
  /// image's after a HUP: netserver_restarts_total + 1) and starts the status listener on
  /// `status_endpoints` when there are any.
  void open(const std::vector<std::string>& listeners, const std::vector<Endpoint>& status_endpoints);
  /// Stops the status listener (its thread joined); the table stays. Idempotent.
  void stop_status();
  /// Around a fork (the atfork handlers): holds the status thread between two of its handlers
  /// (waiting at most a second for it), then lets it go on in the parent.
  void pause_status();
  void resume_status();
  /// The table; null before open().
  MetricsStore* store() { return store_.get(); }

  // --- the parent's side (its loop thread) ---------------------------------------------------------
  /// Before fork: a slot for the child (empty without a table or with every slot taken).
  MetricsStore::Slot claim();
  /// After fork, in the parent: the slot is `pid`'s; or the fork failed.
  void assign(MetricsStore::Slot slot, pid_t pid);
  void cancel(MetricsStore::Slot slot);
  /// `pid` was reaped: what it counted joins the totals.
  void child_exited(pid_t pid);
  /// The children as the parent knows them, for /status and netserver_processes (this process
  /// is listed first by the pages on their own). Empty for a process without children.
  void publish(std::vector<ProcessEntry> children);
  /// True in a child of the process that made the table (a supervised process).
  bool supervised() const { return owner_ != 0 && ::getpid() != owner_; }
  /// How the stall watcher's log names this process: "prefork process 4242".
  std::string process_name() const;
  /// This process's role on /status ("parent" under a Supervisor; the personality otherwise).
  void set_role(std::string role);

  // --- in a new child -----------------------------------------------------------------------------
  /// First thing after fork in the child: it writes `slot` from now on.
  void bind_child(MetricsStore::Slot slot);

 private:
  StatusInput input() const;  // with mutex_ held
  void serve_status(const std::vector<Endpoint>& endpoints);

  ServerRuntime& runtime_;
  ObservabilitySettings settings_;
  std::string personality_;
  mutable std::mutex mutex_;
  std::unique_ptr<MetricsStore> store_;
  std::vector<ProcessEntry> children_;
  std::string role_;
  pid_t owner_ = 0;  // the process that opened the table (a child never stops the status thread)
  // The status listener: its loop, its engine, its thread.
  std::vector<Endpoint> served_;  // the status endpoints with their handler
  std::unique_ptr<boost::asio::io_context> status_io_;
  std::unique_ptr<Engine> status_engine_;
  std::thread status_thread_;
  // pause_status(): the status thread waits in a handler of its loop until released.
  std::mutex pause_mutex_;
  std::condition_variable pause_changed_;
  bool status_paused_ = false;
  bool status_released_ = true;
};

}  // namespace netserver
