#include "prefork.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <random>

#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "netserver/config.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "child_runtime.hpp"
#include "engine.hpp"
#include "server_runtime.hpp"
#include "signals.hpp"
#include "supervisor.hpp"

namespace netserver {

namespace asio = boost::asio;

namespace {

// How often the parent looks at the listen queues for clients that no idle child takes.
constexpr std::chrono::milliseconds queue_check{500};

// --- the child ---------------------------------------------------------------------------------

// prefork.max_requests_jitter (gunicorn's): each child's max_requests plus a random 0..jitter, so
// that children started together do not all recycle at once.
std::uint64_t with_jitter(std::uint64_t max_requests, std::int64_t jitter) {
  if (max_requests == 0 || jitter <= 0) return max_requests;
  std::minstd_rand random(static_cast<unsigned>(::getpid()) ^ static_cast<unsigned>(std::random_device{}()));
  return max_requests + std::uniform_int_distribution<std::uint64_t>(0, static_cast<std::uint64_t>(jitter))(random);
}

// A child process: one session at a time on its engine, the listeners waited on with
// EPOLLEXCLUSIVE so that one idle child wakes per connection. It tells the parent when it is idle
// and busy, and leaves -- always after the session it is serving -- when the parent asks (TERM,
// the retire order), when the parent is gone (it closes its listeners at once: a replacement
// server can bind the port), or after max_requests sessions.
class Child {
 public:
  Child(Server& server, const PreFork::Settings& settings, int channel)
      : server_(server),
        settings_(settings),
        engine_(server, io_,
                EngineOptions{.max_sessions = 1,
                              .watch = settings.exclusive_accept ? Acceptor::Watch::exclusive : Acceptor::Watch::each}),
        parent_(io_, channel),
        signals_(io_),
        max_requests_(with_jitter(settings.max_requests,
                                  server.runtime().observatory().settings().max_requests_jitter)) {}

  int run() {
    signals_.on({SIGTERM}, [this](int) { leave("TERM"); });
    signals_.on({SIGUSR1}, [this](int) { server_.runtime().reopen_log(); });
    parent_.watch([this](char order) { if (order == child_report::retire) leave("retire"); },
                  [this] { parent_gone(); });
    engine_.on_client([this] { parent_.report(child_report::busy); });
    engine_.on_session_end([this] { session_ended(); });
    engine_.listen(server_.runtime().endpoints());
    parent_.report(child_report::idle);
    io_.run();
    return exit_status::ok;
  }

 private:
  void session_ended() {
    ++served_;
    if (max_requests_ != 0 && served_ >= max_requests_) return leave("max_requests");
    if (!engine_.stopping()) parent_.report(child_report::idle);
  }

  // No more clients here; the session in progress (and a closed socket lingering) ends first.
  void leave(const char* why) {
    if (engine_.stopping()) return;
    log::debug("child {} leaves ({})", ::getpid(), why);
    engine_.stop(StopMode::drain, forever, [this] {
      signals_.stop();
      io_.stop();
    });
  }

  void parent_gone() {
    engine_.close_listeners();
    server_.runtime().close_listener_descriptors();
    if (!engine_.stopping() && engine_.has_clients())
      log::warning("child {}: the parent is gone; finishing the session in progress, accepting nobody", ::getpid());
    leave("parent gone");
  }

  Server& server_;
  const PreFork::Settings& settings_;
  asio::io_context io_{single_threaded};
  Engine engine_;
  ParentLink parent_;
  SignalWatcher signals_;
  std::uint64_t served_ = 0;
  std::uint64_t max_requests_;  // max_requests plus this child's share of max_requests_jitter
};

const ChildSignals child_signals{.handled = {SIGTERM, SIGUSR1},
                                 .ignored = {SIGINT, SIGQUIT, SIGHUP, SIGTTIN, SIGTTOU, SIGUSR2}};

// --- the parent --------------------------------------------------------------------------------

// The PreFork parent: the Pool decides, the Supervisor forks, reaps and handles the signals.
class Parent {
 public:
  Parent(Server& server, const PreFork::Settings& settings)
      : server_(server),
        settings_(settings),
        supervisor_(server, {.check_interval = settings.check_for_waiting, .child_role = "prefork child"}),
        queue_timer_(supervisor_.io()),
        pool_(settings.limits) {}

  void run() {
    watch_listen_queues(0);
    supervisor_.run(pool_, [this](int channel, std::size_t) { return Child(server_, settings_, channel).run(); },
                    child_signals);
  }

 private:
  // Clients waiting in a listen queue while the pool counts idle children means some of those
  // "idle" children do not take them (stopped with SIGSTOP, stuck): after two looks in a row
  // (at most 2 x queue_check apart) the pool spawns one more child. TCP listeners only: the
  // kernel reports their queue length (TCP_INFO); a unix socket's is not visible.
  void watch_listen_queues(std::size_t waiting_before) {
    queue_timer_.expires_after(queue_check);
    queue_timer_.async_wait([this, waiting_before](const boost::system::error_code& error) {
      if (error || supervisor_.stopping()) return;
      const std::size_t waiting = clients_in_listen_queues();
      if (waiting > 0 && waiting_before > 0) supervisor_.apply(pool_.clients_waiting(supervisor_.table(), waiting));
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

  Server& server_;
  const PreFork::Settings& settings_;
  Supervisor supervisor_;
  asio::steady_timer queue_timer_;
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
        settings.check_for_waiting = config.duration("prefork.check_for_waiting");
        settings.exclusive_accept = config.string("prefork.serialize") == "exclusive";
        return std::make_unique<PreFork>(settings);
      },
  };
}

void PreFork::loop(Server& server) { Parent(server, settings_).run(); }

}  // namespace netserver
