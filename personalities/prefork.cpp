#include "prefork.hpp"

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <optional>

#include <fmt/format.h>

#include "netserver/config.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "supervisor.hpp"
#include "worker.hpp"

namespace netserver {

namespace asio = boost::asio;

namespace {

// What children tell the parent, and the parent a child, over their socketpair: one byte each.
constexpr char report_idle = 'i';
constexpr char report_busy = 'b';
constexpr char order_retire = 'r';

// --- the child ---------------------------------------------------------------------------------

// A child process: waits for a client while idle (outside the event loop, so that EPOLLEXCLUSIVE
// wakes one idle child per connection), then serves it on its event loop. Leaves when the parent
// asks (retire, TERM), when the parent is gone, or after max_requests sessions.
class Child {
 public:
  // A client and its address ("127.0.0.1:5555"; a unix-socket client goes by the listener's path).
  struct Accepted {
    Transport::Socket socket;
    std::string peer;
    bool tls = false;  // accepted on a tls:// listener
  };

  Child(Server& server, const PreFork::Settings& settings, int channel)
      : server_(server), settings_(settings), channel_(channel), worker_(server, io_, WorkerOptions{}) {
    worker_.on_session_end([this] { io_.stop(); });
  }

  int run() {
    if (!set_up()) return exit_status::boot_failed;
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
    return true;
  }

  void watch(int fd, std::uint32_t events) {
    epoll_event event{};
    event.events = events;
    event.data.fd = fd;
    if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &event) != 0)
      log::error("{}", system_error_text(fmt::format("epoll_ctl() on descriptor {} in a child", fd), errno));
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
      const int ready = ::epoll_wait(epoll_, events, 8, -1);
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
      if (leaving_) return std::nullopt;
    }
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
        log::warning("{}; pausing 100 ms", system_error_text("accept() in a child", errno));
        ::usleep(100'000);  // idle: nothing else to do; the pending client stays queued
      }
      return std::nullopt;  // EAGAIN: another child took it
    }
    const int family = peer.ss_family;
    const int protocol = family == AF_UNIX ? 0 : IPPROTO_TCP;
    std::string name;
    bool tls = false;
    for (const Listener& listener : server_.listeners()) {
      if (listener.fd() != listener_fd) continue;
      tls = listener.tls();
      if (family == AF_UNIX) name = listener.name();
    }
    if (name.empty()) name = format_address(reinterpret_cast<sockaddr*>(&peer), length);
    return Accepted{Transport::Socket(io_, asio::generic::stream_protocol(family, protocol), fd), std::move(name), tls};
  }

  void serve(Accepted client) {
    io_.restart();
    worker_.serve(std::move(client.socket), std::move(client.peer), client.tls);
    io_.run();  // until the session ends (lingering closes carry on in later runs)
  }

  Server& server_;
  const PreFork::Settings& settings_;
  int channel_;
  int signals_ = -1;
  int epoll_ = -1;
  bool leaving_ = false;  // told to go (TERM, retire, parent gone): no more waiting for clients
  asio::io_context io_{single_threaded};
  Worker worker_;
};

// --- the parent --------------------------------------------------------------------------------

// The PreFork parent: the Pool decides, the Supervisor forks, reaps and handles the signals.
class Parent final : public ProcessControl {
 public:
  Parent(Server& server, const PreFork::Settings& settings)
      : server_(server),
        settings_(settings),
        supervisor_(server, {.check_interval = settings.check_for_waiting}),
        pool_(settings.limits, *this) {
    supervisor_.on_report([this](pid_t pid, char report) {
      if (report == report_idle) pool_.child_idle(pid);
      else if (report == report_busy) pool_.child_busy(pid);
    });
  }

  void run() { supervisor_.run(pool_); }

  pid_t spawn_child() override {
    return supervisor_.spawn([this](int channel) { return Child(server_, settings_, channel).run(); });
  }
  void retire_child(pid_t pid) override { supervisor_.send_order(pid, order_retire); }
  void signal_child(pid_t pid, int signal) override { ::kill(pid, signal); }

 private:
  Server& server_;
  const PreFork::Settings& settings_;
  Supervisor supervisor_;
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
  // The parent starts children only to reach these two: with both 0 no child ever serves.
  if (size_of(config, "prefork.min_servers") == 0 && size_of(config, "prefork.min_spare_servers") == 0)
    throw ConfigError(fmt::format("prefork: {} and {}: no child would ever be started; set either to 1 or more",
                                  config.describe("prefork.min_servers"), config.describe("prefork.min_spare_servers")));
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
