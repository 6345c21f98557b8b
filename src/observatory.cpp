#include "observatory.hpp"

#include <pthread.h>
#include <unistd.h>

#include <chrono>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include "engine.hpp"
#include "metrics_engine.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "server_runtime.hpp"
#include "status_http.hpp"

namespace netserver {

namespace asio = boost::asio;

namespace {

// Slots for child processes: PreFork children, workers and Fork children alive at once (and the
// previous image's still finishing after a HUP). A child past them counts nowhere (logged once).
constexpr std::size_t child_slots = 1024;

// The observatory whose status thread runs in this process: every fork() pauses it first.
Observatory* status_running = nullptr;
void pause_before_fork() {
  if (status_running) status_running->pause_status();
}
void resume_after_fork() {
  if (status_running) status_running->resume_status();
}
void forget_in_child() { status_running = nullptr; }  // the thread did not come along
[[maybe_unused]] const bool fork_handlers_installed =
    ::pthread_atfork(pause_before_fork, resume_after_fork, forget_in_child) == 0;

// The status listener's sessions: small requests, pages of at most a few MiB, no idle timeout of
// the engine's (the handler keeps its own request and idle timeouts).
SessionLimits status_limits() {
  SessionLimits limits;
  limits.max_line = 64 * 1024;
  limits.max_output = 64 << 20;
  limits.close_timeout = std::chrono::seconds(5);
  limits.linger = std::chrono::seconds(1);
  return limits;
}

// Status connections served at once; more are refused at once.
constexpr std::size_t status_sessions = 64;

}  // namespace

Observatory::Observatory(ServerRuntime& runtime) : runtime_(runtime) {}

Observatory::~Observatory() { stop_status(); }

void Observatory::configure(const Config& config) {
  settings_ = observability_settings(config);
  personality_ = config.string("personality");
  role_ = personality_;
}

void Observatory::open(const std::vector<std::string>& listeners, const std::vector<Endpoint>& status_endpoints) {
  if (store_) return;
  MetricsSchema& schema = MetricsSchema::global();
  register_engine_metrics(schema, listeners);
  store_ = MetricsStore::create(schema, child_slots);
  owner_ = ::getpid();
  if (store_->restarted()) engine_metrics().restarts.add();
  if (!status_endpoints.empty()) serve_status(status_endpoints);
}

StatusInput Observatory::input() const {
  StatusInput input{*store_, engine_metrics(), runtime_.name, std::string(version()), personality_, {}};
  ProcessEntry self{::getpid(), role_, ProcessState::idle};
  // Busy while it has sessions (a process that serves itself; a parent never has any).
  const auto cells = store_->cells_of(self.pid);
  if (cells && (*cells)[engine_metrics().sessions_open_cell] > 0) self.state = ProcessState::busy;
  input.processes.push_back(std::move(self));
  for (const ProcessEntry& child : children_) input.processes.push_back(child);
  return input;
}

void Observatory::serve_status(const std::vector<Endpoint>& endpoints) {
  StatusPages pages{
      [this] {
        std::lock_guard lock(mutex_);
        return render_prometheus(input());
      },
      [this] {
        std::lock_guard lock(mutex_);
        return render_status_text(input());
      },
      [this] {
        std::lock_guard lock(mutex_);
        return render_status_json(input());
      },
  };
  auto handler = std::make_shared<StatusHttpHandler>(std::move(pages), settings_.status_cidr_allow);
  served_ = endpoints;  // the engine keeps references to them
  for (Endpoint& endpoint : served_) endpoint.handler = handler;
  status_io_ = std::make_unique<asio::io_context>(single_threaded);
  status_engine_ = std::make_unique<Engine>(runtime_.server(), *status_io_,
                                            EngineOptions{.max_sessions = status_sessions,
                                                          .refuse_when_full = true,
                                                          .limits = status_limits(),
                                                          .toolkit = true});
  status_engine_->listen(served_);
  for (const Endpoint& endpoint : served_) log::notice("status listener on {}", endpoint.name);
  status_thread_ = std::thread([io = status_io_.get()] {
    // The process's signals are its loop's: this thread takes none of them.
    sigset_t all;
    sigfillset(&all);
    ::pthread_sigmask(SIG_BLOCK, &all, nullptr);
    try {
      io->run();
    } catch (const std::exception& error) {
      log::error("status listener failed: {}", error.what());
    }
  });
  status_running = this;
}

void Observatory::pause_status() {
  if (!status_thread_.joinable() || ::getpid() != owner_) return;
  std::unique_lock lock(pause_mutex_);
  status_paused_ = false;
  status_released_ = false;
  asio::post(*status_io_, [this] {
    std::unique_lock held(pause_mutex_);
    status_paused_ = true;
    pause_changed_.notify_all();
    pause_changed_.wait(held, [this] { return status_released_; });
  });
  // A status thread stuck for a second (it never should be) is forked past rather than waited for.
  if (!pause_changed_.wait_for(lock, std::chrono::seconds(1), [this] { return status_paused_; })) status_released_ = true;
}

void Observatory::resume_status() {
  std::lock_guard lock(pause_mutex_);
  status_released_ = true;
  pause_changed_.notify_all();
}

void Observatory::stop_status() {
  if (!status_thread_.joinable() || ::getpid() != owner_) return;
  if (status_running == this) status_running = nullptr;
  asio::post(*status_io_, [this] {
    status_engine_->stop(StopMode::abort, Duration::zero(), [] {});
    status_io_->stop();
  });
  status_thread_.join();
  status_engine_.reset();
  status_io_.reset();
}

MetricsStore::Slot Observatory::claim() {
  if (!store_) return {};
  std::lock_guard lock(mutex_);
  return store_->claim();
}

void Observatory::assign(MetricsStore::Slot slot, pid_t pid) {
  if (!store_) return;
  std::lock_guard lock(mutex_);
  store_->assign(slot, pid);
}

void Observatory::cancel(MetricsStore::Slot slot) {
  if (!store_) return;
  std::lock_guard lock(mutex_);
  store_->cancel(slot);
}

void Observatory::child_exited(pid_t pid) {
  if (!store_) return;
  std::lock_guard lock(mutex_);
  store_->child_exited(pid);
}

void Observatory::publish(std::vector<ProcessEntry> children) {
  std::lock_guard lock(mutex_);
  children_ = std::move(children);
}

std::string Observatory::process_name() const {
  return fmt::format("{} {} {}", personality_, ::getpid() == owner_ ? "process" : "child", ::getpid());
}

void Observatory::set_role(std::string role) {
  std::lock_guard lock(mutex_);
  role_ = std::move(role);
}

// The status thread is not in the child (threads do not survive fork); the mutex may have been
// held by it at the fork, so the child never takes it.
void Observatory::bind_child(MetricsStore::Slot slot) {
  if (store_) store_->bind_child(slot);
}

}  // namespace netserver
