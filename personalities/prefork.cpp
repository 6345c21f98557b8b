#include "prefork.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <optional>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "netserver/config.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "signals.hpp"
#include "systemd.hpp"
#include "worker.hpp"

namespace netserver {

namespace asio = boost::asio;

namespace {

// What children tell the parent, and the parent a child, over their socketpair: one byte each.
constexpr char report_idle = 'i';
constexpr char report_busy = 'b';
constexpr char order_retire = 'r';

// How often an idle child with lingering sockets gives its event loop a turn.
constexpr int linger_poll_ms = 10;

// How often the parent looks at the listen queues for clients that no idle child takes.
constexpr std::chrono::milliseconds queue_check{500};

// --- the child ---------------------------------------------------------------------------------

// A child process: waits for a client while idle (outside the event loop, so that EPOLLEXCLUSIVE
// wakes one idle child per connection), then serves it on its event loop. Leaves when the parent
// asks (retire, TERM), when the parent is gone, or after max_requests sessions.
class Child {
 public:
  // A client and its address ("127.0.0.1:5555"; a unix-socket client goes by the listener's path).
  struct Accepted {
    Session::Socket socket;
    std::string peer;
  };

  Child(Server& server, const PreFork::Settings& settings, int channel)
      : server_(server), settings_(settings), channel_(channel), worker_(server, io_, WorkerOptions{}) {
    worker_.on_session_end([this] { io_.stop(); });
  }

  int run() {
    if (!set_up()) return exit_status::boot_failed;
    try {
      server_.child_init_hook();
    } catch (const std::exception& error) {
      log::error("child_init_hook failed: {}", error.what());
      return exit_status::boot_failed;
    }
    for (std::uint64_t served = 0; !leaving_ && (settings_.max_requests == 0 || served < settings_.max_requests);
         ++served) {
      report(report_idle);
      std::optional<Accepted> client = wait_for_client();
      if (!client) break;
      report(report_busy);
      serve(std::move(*client));
    }
    server_.child_finish_hook();
    io_.restart();  // closed sockets still waiting for their clients' EOF (at most `linger` seconds)
    while (worker_.lingering() > 0 && io_.run_one() > 0) {
    }
    return exit_status::ok;
  }

 private:
  // TERM (leave) and USR1 (reopen the log) arrive through a signalfd and are looked at only
  // between sessions: a child always finishes the session it is serving. Every other signal is
  // the parent's business.
  bool set_up() {
    struct sigaction action {};
    action.sa_handler = SIG_DFL;
    for (int signal = 1; signal < NSIG; ++signal) ::sigaction(signal, &action, nullptr);
    action.sa_handler = SIG_IGN;
    for (int signal : {SIGPIPE, SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR2}) ::sigaction(signal, &action, nullptr);
    sigset_t mine;
    sigemptyset(&mine);
    sigaddset(&mine, SIGTERM);
    sigaddset(&mine, SIGUSR1);
    signals_ = ::signalfd(-1, &mine, SFD_CLOEXEC | SFD_NONBLOCK);
    ::sigprocmask(SIG_SETMASK, &mine, nullptr);
    ::prctl(PR_SET_PDEATHSIG, SIGTERM);  // a parent killed outright still ends its children
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (signals_ < 0 || epoll_ < 0) {
      log::error("{}", system_error_text("signalfd()/epoll_create1() in a new child", errno));
      return false;
    }
    watch(signals_, EPOLLIN);
    watch(channel_, EPOLLIN);
    for (const Listener& listener : server_.listeners())
      watch(listener.fd(), EPOLLIN | (settings_.exclusive_accept ? std::uint32_t{EPOLLEXCLUSIVE} : 0u));
    listening_ = server_.listeners().size();
    return true;
  }

  void watch(int fd, std::uint32_t events) {
    epoll_event event{};
    event.events = events;
    event.data.fd = fd;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event) != 0)
      log::error("{}", system_error_text(fmt::format("epoll_ctl() on descriptor {} in a child", fd), errno));
  }

  void forget(int listener_fd) {
    ::epoll_ctl(epoll_, EPOLL_CTL_DEL, listener_fd, nullptr);
    --listening_;
  }

  void report(char state) {
    if (::send(channel_, &state, 1, MSG_NOSIGNAL) != 1) log::debug("cannot report to the parent: {}", std::strerror(errno));
  }

  // Blocks until a client is accepted (returned) or it is time to leave (nothing; leaving_ set).
  // A child woken for a connection takes it even when told to leave in the same wake-up: with
  // EPOLLEXCLUSIVE the kernel woke this child instead of another, and nobody else would take it.
  std::optional<Accepted> wait_for_client() {
    epoll_event events[8];
    for (;;) {
      const int ready = ::epoll_wait(epoll_, events, 8, worker_.lingering() > 0 ? linger_poll_ms : -1);
      finish_lingering();
      if (ready < 0 && errno == EINTR) continue;
      if (ready < 0) {
        log::error("{}", system_error_text("epoll_wait() in a child", errno));
        leaving_ = true;
        return std::nullopt;
      }
      for (int i = 0; i < ready; ++i) {
        if (events[i].data.fd == channel_) leaving_ = true;  // retire, or the parent is gone
        else if (events[i].data.fd == signals_ && !handle_signals()) leaving_ = true;
      }
      for (int i = 0; i < ready; ++i)
        if (events[i].data.fd != channel_ && events[i].data.fd != signals_)
          if (auto client = accept_from(events[i].data.fd)) return client;
      if (listening_ == 0) leaving_ = true;  // the server stopped listening: it is stopping
      if (leaving_) return std::nullopt;
    }
  }

  // Closed sockets still waiting for their clients' EOF (a refused client's above all) belong to
  // the event loop, which does not run while the child waits for a client: it is given a turn
  // every linger_poll_ms until they are gone, so that none keeps its descriptor until the next
  // session (with hundreds of refused clients, the child ran out of descriptors).
  void finish_lingering() {
    if (worker_.lingering() == 0) return;
    io_.restart();
    io_.poll();
  }

  // Reads the pending signals: false for TERM (leave), true after reopening the log for USR1.
  bool handle_signals() {
    signalfd_siginfo info{};
    bool stay = true;
    while (::read(signals_, &info, sizeof info) == sizeof info) {
      if (info.ssi_signo == SIGTERM) stay = false;
      else if (info.ssi_signo == SIGUSR1) server_.reopen_log();
    }
    return stay;
  }

  std::optional<Accepted> accept_from(int listener_fd) {
    sockaddr_storage peer{};
    socklen_t length = sizeof peer;
    const int fd = ::accept4(listener_fd, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        if (!shortage_logged_)  // once per shortage: the next accepted client re-arms it
          log::warning("{}; pausing accepts 100 ms at a time", system_error_text("accept() in a child", errno));
        shortage_logged_ = true;
        ::usleep(100'000);  // idle: nothing else to do; the pending client stays queued
      }
      if (errno == EINVAL) forget(listener_fd);  // shut down by the stopping parent: it stays ready
      return std::nullopt;  // EAGAIN: another child took it
    }
    shortage_logged_ = false;
    const int family = peer.ss_family;
    const int protocol = family == AF_UNIX ? 0 : IPPROTO_TCP;
    std::string name;
    for (const Listener& listener : server_.listeners())
      if (family == AF_UNIX && listener.fd() == listener_fd) name = listener.name();
    if (name.empty()) name = format_address(reinterpret_cast<sockaddr*>(&peer), length);
    return Accepted{Session::Socket(io_, asio::generic::stream_protocol(family, protocol), fd), std::move(name)};
  }

  void serve(Accepted client) {
    io_.restart();
    worker_.serve(std::move(client.socket), std::move(client.peer));
    io_.run();  // until the session ends (lingering closes carry on in later runs)
  }

  Server& server_;
  const PreFork::Settings& settings_;
  int channel_;
  int signals_ = -1;
  int epoll_ = -1;
  bool leaving_ = false;  // told to go (TERM, retire, parent gone): no more waiting for clients
  bool shortage_logged_ = false;  // accept() ran out of descriptors and said so
  std::size_t listening_ = 0;     // listeners still watched (a stopping server shuts them down)
  asio::io_context io_{single_threaded};
  Worker worker_;
};

// --- the parent --------------------------------------------------------------------------------

class Parent final : public ProcessControl {
 public:
  Parent(Server& server, const PreFork::Settings& settings)
      : server_(server), settings_(settings), signals_(io_), job_signals_(io_), check_timer_(io_), grace_timer_(io_),
        queue_timer_(io_), status_timer_(io_), drain_timer_(io_), pool_(settings.limits, *this) {}

  void run() {
    signals_.on({SIGTERM, SIGINT}, [this](int signal) { stop(signal, SIGTERM); });
    signals_.on({SIGQUIT}, [this](int signal) { stop(signal, SIGKILL); });
    watch_job_signals();
    signals_.on({SIGCHLD}, [this](int) { reap_children(); });
    signals_.on({SIGHUP}, [this](int) { restart(); });
    signals_.on({SIGUSR1}, [this](int) {
      server_.reopen_log();
      for (pid_t pid : pool_.pids()) signal_child(pid, SIGUSR1);  // each reopens between sessions
    });
    pool_.adopt_leaving(server_.inherited_children());
    reap_children();  // those that ended during the exec: their SIGCHLD went to the old image
    limit_previous_image();
    pool_.start();
    schedule_check();
    watch_listen_queues(0);
    if (std::getenv("NOTIFY_SOCKET")) report_status();
    io_.run();
    if (!pool_.failure().empty()) throw Error(pool_.failure(), exit_status::boot_failed);
  }

  pid_t spawn_child() override {
    server_.pre_fork_hook();
    int channel[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0) {
      log::error("{}", system_error_text("socketpair() failed while spawning a child", errno));
      return -1;
    }
    // Signals stay blocked across fork until the child has replaced the parent's handlers.
    sigset_t all, previous;
    sigfillset(&all);
    ::sigprocmask(SIG_BLOCK, &all, &previous);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(channel[0]);
      ::close(job_signals_.native_handle());
      for (const auto& [other, open] : channels_) ::close(open->stream.native_handle());
      ::_exit(run_child(channel[1]));
    }
    const int fork_error = errno;
    ::sigprocmask(SIG_SETMASK, &previous, nullptr);
    ::close(channel[1]);
    if (pid < 0) {
      ::close(channel[0]);
      log::error("{}", system_error_text("fork() failed while spawning a child", fork_error));
      return -1;
    }
    log::info("spawned child {}", pid);
    listen_to(pid, channel[0]);
    return pid;
  }

  void retire_child(pid_t pid) override {
    auto it = channels_.find(pid);
    if (it != channels_.end()) ::send(it->second->stream.native_handle(), &order_retire, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
  }

  void signal_child(pid_t pid, int signal) override { ::kill(pid, signal); }

 private:
  // The parent's end of a child's socketpair (shared with its read handler, which may still be
  // queued when the child is reaped).
  struct Channel {
    Channel(asio::io_context& io, int fd) : stream(io, fd) {}
    asio::posix::stream_descriptor stream;
    char reports[64];
  };

  // Runs in the new child and never returns to the parent's code.
  int run_child(int channel) noexcept {
    try {
      return Child(server_, settings_, channel).run();
    } catch (const std::exception& error) {
      log::error("child failed: {}", error.what());
      return exit_status::failure;
    }
  }

  void listen_to(pid_t pid, int fd) {
    auto channel = std::make_shared<Channel>(io_, fd);
    channels_[pid] = channel;
    read_reports(pid, std::move(channel));
  }

  void read_reports(pid_t pid, std::shared_ptr<Channel> channel) {
    Channel& open = *channel;
    open.stream.async_read_some(asio::buffer(open.reports), [this, pid, channel = std::move(channel)](
                                                                const boost::system::error_code& error,
                                                                std::size_t bytes) mutable {
      if (error) return;  // the child is gone (or its channel closed): waitpid says how
      for (std::size_t i = 0; i < bytes; ++i) {
        if (channel->reports[i] == report_idle) pool_.child_idle(pid);
        else if (channel->reports[i] == report_busy) pool_.child_busy(pid);
      }
      if (channels_.count(pid)) read_reports(pid, std::move(channel));
    });
  }

  // SIGHUP: every child finishes its session and leaves, while this process execs the new image,
  // which waits for them. The listening sockets never close, so no client is refused.
  void restart() {
    if (pool_.stopping() || !server_.prepare_restart()) return;
    log::notice("HUP received: restarting; {} children finish their sessions and exit", pool_.size());
    pool_.stop(SIGTERM);
    server_.restart(pool_.pids());
    pool_.resume();  // exec failed (logged): carry on, replacing the children told to leave
  }

  // TTIN/TTOU resize the pool only when a process sent them (kill -TTOU: si_code SI_USER). They
  // are read from a signalfd, blocked: the kernel also sends TTOU to a background job that writes
  // to a terminal with `stty tostop` -- with a handler installed the write was retried forever,
  // each retry shrinking the pool; blocked, the write simply goes through.
  void watch_job_signals() {
    sigset_t job;
    sigemptyset(&job);
    sigaddset(&job, SIGTTIN);
    sigaddset(&job, SIGTTOU);
    ::sigprocmask(SIG_BLOCK, &job, nullptr);
    const int fd = ::signalfd(-1, &job, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0) return log::error("{}", system_error_text("signalfd() for TTIN/TTOU", errno));
    job_signals_.assign(fd);
    read_job_signals();
  }

  void read_job_signals() {
    job_signals_.async_wait(asio::posix::descriptor_base::wait_read, [this](const boost::system::error_code& error) {
      if (error) return;
      signalfd_siginfo info{};
      while (::read(job_signals_.native_handle(), &info, sizeof info) == sizeof info) {
        const bool from_a_process = static_cast<int>(info.ssi_code) <= 0;  // SI_USER, SI_QUEUE, SI_TKILL
        if (!from_a_process) log::debug("{} from the kernel (terminal job control): ignored", signal_name(static_cast<int>(info.ssi_signo)));
        else if (pool_.stopping()) continue;
        else if (info.ssi_signo == SIGTTIN) pool_.grow();
        else pool_.shrink();
      }
      read_job_signals();
    });
  }

  // Clients waiting in a listen queue while the pool counts idle children means some of those
  // "idle" children do not take them (stopped with SIGSTOP, stuck): after two looks in a row
  // (at most 2 x queue_check apart) the pool spawns one more child. TCP listeners only: the
  // kernel reports their queue length (TCP_INFO); a unix socket's is not visible.
  void watch_listen_queues(std::size_t waiting_before) {
    queue_timer_.expires_after(queue_check);
    queue_timer_.async_wait([this, waiting_before](const boost::system::error_code& error) {
      if (error || pool_.stopping()) return;
      const std::size_t waiting = clients_in_listen_queues();
      if (waiting > 0 && waiting_before > 0) pool_.clients_waiting(waiting);
      watch_listen_queues(waiting);
    });
  }

  std::size_t clients_in_listen_queues() const {
    std::size_t waiting = 0;
    for (const Listener& listener : server_.listeners()) {
      if (listener.family() == AF_UNIX) continue;
      tcp_info info{};
      socklen_t size = sizeof info;
      if (::getsockopt(listener.fd(), IPPROTO_TCP, TCP_INFO, &info, &size) == 0) waiting += info.tcpi_unacked;
    }
    return waiting;
  }

  // Every couple of seconds, tells systemd how the pool is doing (only when systemd listens).
  void report_status(std::string last = {}) {
    status_timer_.expires_after(std::chrono::seconds(2));
    status_timer_.async_wait([this, last](const boost::system::error_code& error) {
      if (error || pool_.stopping()) return;
      const std::string now = fmt::format("STATUS={} children: {} busy, {} idle", pool_.size(),
                                          pool_.count(ChildState::busy), pool_.count(ChildState::idle));
      if (now != last) systemd::notify(now);
      report_status(now);
    });
  }

  // restart_drain_timeout: the previous image's children still busy then are killed.
  void limit_previous_image() {
    const double limit = server_.config().seconds("restart_drain_timeout");
    const std::vector<pid_t> previous = server_.inherited_children();
    if (limit <= 0 || previous.empty()) return;
    drain_timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(limit)));
    drain_timer_.async_wait([this, limit, previous](const boost::system::error_code& error) {
      if (error) return;
      const std::vector<pid_t> alive = pool_.pids();
      for (pid_t pid : previous) {
        if (std::find(alive.begin(), alive.end(), pid) == alive.end()) continue;
        log::warning("child {} of the previous image still busy after restart_drain_timeout ({} s): killing it", pid, limit);
        signal_child(pid, SIGKILL);
      }
    });
  }

  // Only the pids this parent spawned are waited for: a hook's own children are not ours.
  void reap_children() {
    for (pid_t pid : pool_.pids()) {
      int status = 0;
      if (::waitpid(pid, &status, WNOHANG) != pid) continue;
      channels_.erase(pid);
      pool_.child_exited(pid, status);
    }
    if (!pool_.failure().empty() && !pool_.stopping()) {
      log::error("{}", pool_.failure());
      stop(0, SIGTERM);
    }
    if (pool_.stopping() && pool_.size() == 0) finish();
  }

  void schedule_check() {
    check_timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(settings_.check_for_waiting)));
    check_timer_.async_wait([this](const boost::system::error_code& error) {
      if (error || pool_.stopping()) return;
      pool_.check();
      schedule_check();
    });
  }

  // TERM/INT: children finish their session, the stragglers are killed after graceful_timeout.
  // QUIT: children are killed now.
  void stop(int received, int signal_for_children) {
    if (received != 0)
      log::notice("{} received: stopping {} children{}", signal_name(received), pool_.size(),
                  signal_for_children == SIGTERM ? " after their current session" : " now");
    systemd::notify("STOPPING=1");
    server_.stop_listening();  // busy children keep their copies: the shutdown stops those too
    const bool first = !pool_.stopping();
    pool_.stop(signal_for_children);
    check_timer_.cancel();
    if (pool_.size() == 0) return finish();
    if (!first || signal_for_children == SIGKILL) return;
    const double grace = server_.config().seconds("graceful_timeout");
    grace_timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(grace)));
    grace_timer_.async_wait([this, grace](const boost::system::error_code& error) {
      if (error || pool_.size() == 0) return;
      log::warning("{} children still busy after graceful_timeout ({} s): killing them", pool_.size(), grace);
      pool_.stop(SIGKILL);
    });
  }

  void finish() {
    grace_timer_.cancel();
    queue_timer_.cancel();
    status_timer_.cancel();
    drain_timer_.cancel();
    job_signals_.close();
    signals_.stop();
    io_.stop();
  }

  Server& server_;
  const PreFork::Settings& settings_;
  asio::io_context io_{single_threaded};
  SignalWatcher signals_;
  asio::posix::stream_descriptor job_signals_;  // TTIN/TTOU, with who sent them
  asio::steady_timer check_timer_;
  asio::steady_timer grace_timer_;
  asio::steady_timer queue_timer_;
  asio::steady_timer status_timer_;
  asio::steady_timer drain_timer_;
  std::map<pid_t, std::shared_ptr<Channel>> channels_;
  Pool pool_;
};

std::size_t size_of(const Config& config, const char* key) { return static_cast<std::size_t>(config.integer(key)); }

// Inconsistent bounds are errors, never silently rewritten (Net::Server rewrites them).
void check_bounds(const Config& config) {
  auto require = [&](bool holds, const char* key, const char* relation, const char* other) {
    if (!holds)
      throw ConfigError(fmt::format("prefork: {} must be {} {}", config.describe(key), relation, config.describe(other)));
  };
  require(size_of(config, "prefork.min_servers") <= size_of(config, "prefork.max_servers"), "prefork.min_servers",
          "at most", "prefork.max_servers");
  require(size_of(config, "prefork.min_spare_servers") <= size_of(config, "prefork.max_spare_servers"),
          "prefork.min_spare_servers", "at most", "prefork.max_spare_servers");
  require(size_of(config, "prefork.max_spare_servers") < size_of(config, "prefork.max_servers"),
          "prefork.max_spare_servers", "less than", "prefork.max_servers");
}

}  // namespace

PersonalityInfo PreFork::info() {
  return {
      .name = "prefork",
      .summary = "a parent and a managed pool of child processes, one client per child at a time",
      .add_options =
          [](Options& options) {
            options.add(Option::integer("prefork.min_servers", 5, 0, 10000, "children kept alive at least"));
            options.add(Option::integer("prefork.max_servers", 50, 1, 10000, "children alive at most"));
            options.add(Option::integer("prefork.min_spare_servers", 2, 0, 10000, "idle children wanted at least"));
            options.add(Option::integer("prefork.max_spare_servers", 10, 0, 10000, "idle children kept at most"));
            options.add(Option::integer("prefork.max_requests", 1000, 0, 1e12,
                                        "sessions a child serves before it is replaced (0: no limit)"));
            options.add(Option::duration("prefork.check_for_waiting", 10, 0.01, 86400,
                                         "seconds between checks for idle children to retire"));
            options.add(Option::text("prefork.serialize", "exclusive",
                                     "how idle children share the listeners: exclusive (EPOLLEXCLUSIVE: one "
                                     "child woken per connection) or none (every idle child woken)")
                            .with_choices({"exclusive", "none"}));
          },
      .create = [](const Config& config) -> std::unique_ptr<Personality> {
        check_bounds(config);
        Settings settings;
        settings.limits = PoolLimits{size_of(config, "prefork.min_servers"), size_of(config, "prefork.max_servers"),
                                     size_of(config, "prefork.min_spare_servers"),
                                     size_of(config, "prefork.max_spare_servers")};
        settings.max_requests = static_cast<std::uint64_t>(config.integer("prefork.max_requests"));
        settings.check_for_waiting = config.seconds("prefork.check_for_waiting");
        settings.exclusive_accept = config.string("prefork.serialize") == "exclusive";
        return std::make_unique<PreFork>(settings);
      },
  };
}

void PreFork::loop(Server& server) { Parent(server, settings_).run(); }

}  // namespace netserver
