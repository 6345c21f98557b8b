// stall_probe: a tiny event-loop program whose callback blocks on command, proving the stall
// watcher (src/stall_watch.hpp) and the watchdog (src/watchdog.hpp) on their own: it marks its
// callbacks, beats and installs its last words the way the engine does.
//
// One command per line: "block SECONDS" (the callback sleeps that long in block_in_callback(),
// then answers "done"), "deaf SECONDS" (the same with SIGABRT blocked: only SIGKILL ends it),
// "stats" (answers "accepted N stalls N" from the metrics store).
// worker_timeout 0: this process serves, with its stall watcher on stall_warning. Otherwise a
// child it forks serves (a "probe child") and this process is the child's watchdog; it reaps the
// child, folds its slot and logs "probe child PID ended: ..." and "totals: accepted N stalls N".

#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include <netserver/netserver.hpp>

#include "metrics_engine.hpp"
#include "metrics_store.hpp"
#include "observability_options.hpp"
#include "probe_command.hpp"
#include "stall_watch.hpp"
#include "supervisor.hpp"
#include "watchdog.hpp"

namespace asio = boost::asio;
using asio::ip::tcp;

// Not static and not inlined: the last words' backtrace names it (the binary exports its symbols).
[[gnu::noinline]] void block_in_callback(double seconds) {
  timespec left{static_cast<time_t>(seconds), static_cast<long>((seconds - static_cast<time_t>(seconds)) * 1e9)};
  while (::nanosleep(&left, &left) != 0 && errno == EINTR) {
  }
}

namespace {

std::string totals_line(const netserver::MetricsStore& store) {
  const std::vector<std::int64_t> totals = store.totals();
  const auto value = [&](std::string_view name) {
    for (std::size_t i = 0; i < store.series().size(); ++i)
      if (store.families()[store.series()[i].family].name == name) return totals[netserver::MetricsSchema::cell_of(i)];
    return std::int64_t{-1};
  };
  return fmt::format("accepted {} stalls {}", value("netserver_connections_accepted_total"),
                     value("netserver_loop_stalls_total"));
}

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, std::uint64_t id, const netserver::MetricsStore& store)
      : socket_(std::move(socket)),
        peer_(fmt::format("{}:{}", socket_.remote_endpoint().address().to_string(), socket_.remote_endpoint().port())),
        subject_(id, peer_),
        store_(store) {}

  void read() {
    asio::async_read_until(socket_, input_, '\n', [self = shared_from_this()](boost::system::error_code error, std::size_t) {
      if (!error) self->on_line();
    });
  }

 private:
  void on_line() {
    auto reply = std::make_shared<std::string>();
    {
      netserver::CallbackScope scope(subject_, netserver::CallbackKind::on_input);
      std::istream in(&input_);
      std::string line;
      std::getline(in, line);
      const auto [command, argument] = probe::parse(line);
      if (command == "block" || command == "deaf") {
        if (command == "deaf") {
          sigset_t abort_signal;
          sigemptyset(&abort_signal);
          sigaddset(&abort_signal, SIGABRT);
          ::sigprocmask(SIG_BLOCK, &abort_signal, nullptr);
        }
        block_in_callback(probe::number(argument));
        *reply = "done\n";
      } else if (command == "stats") {
        *reply = totals_line(store_) + "\n";
      } else {
        *reply = "unknown command\n";
      }
    }
    asio::async_write(socket_, asio::buffer(*reply), [self = shared_from_this(), reply](boost::system::error_code error,
                                                                                        std::size_t) {
      if (!error) self->read();
    });
  }

  tcp::socket socket_;
  std::string peer_;
  netserver::ActivitySubject subject_;  // after peer_, which it views
  const netserver::MetricsStore& store_;
  asio::streambuf input_;
};

// Accepts on 127.0.0.1:0, each client a Connection.
class Acceptor {
 public:
  Acceptor(asio::io_context& io, const netserver::MetricsStore& store)
      : acceptor_(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), store_(store) {
    netserver::log::notice("listening on 127.0.0.1:{}", acceptor_.local_endpoint().port());
    accept();
  }

 private:
  void accept() {
    acceptor_.async_accept([this](boost::system::error_code error, tcp::socket socket) {
      if (error) return;
      netserver::engine_metrics().accepted[0].add();
      std::make_shared<Connection>(std::move(socket), ++next_id_, store_)->read();
      accept();
    });
  }

  tcp::acceptor acceptor_;
  const netserver::MetricsStore& store_;
  std::uint64_t next_id_ = 0;
};

// A serving loop in this process: heartbeat, stall watcher, last words.
int run_loop(netserver::MetricsStore& store, const netserver::ObservabilitySettings& settings, const std::string& name) {
  asio::io_context io;
  netserver::install_last_words(name);
  netserver::StallWatcher::start(
      {settings.stall_warning, settings.worker_timeout / 2, name, netserver::engine_metrics().loop_stalls});
  netserver::HeartbeatTimer heartbeat(io, std::chrono::milliseconds(50));
  asio::signal_set stop(io, SIGTERM, SIGINT);
  stop.async_wait([&io](boost::system::error_code, int) { io.stop(); });
  Acceptor acceptor(io, store);
  io.run();
  netserver::StallWatcher::stop();
  return 0;
}

// The parent of one probe child: its watchdog and its reaper.
int watch_child(netserver::MetricsStore& store, const netserver::ObservabilitySettings& settings) {
  const netserver::MetricsStore::Slot slot = store.claim();
  const pid_t child = ::fork();
  if (child == 0) {
    store.bind_child(slot);
    ::_exit(run_loop(store, settings, "probe child"));
  }
  store.assign(slot, child);
  asio::io_context io;
  bool child_alive = true;
  netserver::Watchdog watchdog(io, store, settings.worker_timeout, [&] {
    return child_alive ? std::vector<netserver::ProcessEntry>{{child, "probe child", netserver::ProcessState::busy}}
                       : std::vector<netserver::ProcessEntry>{};
  });
  watchdog.start();
  asio::signal_set signals(io, SIGCHLD, SIGTERM, SIGINT);
  std::function<void(boost::system::error_code, int)> on_signal = [&](boost::system::error_code error, int number) {
    if (error) return;
    int status = 0;
    if (number == SIGCHLD && child_alive && ::waitpid(child, &status, WNOHANG) == child) {
      child_alive = false;
      store.child_exited(child);
      netserver::log::notice("probe child {} ended: {}", child, netserver::describe_wait_status(status));
      netserver::log::notice("totals: {}", totals_line(store));
    }
    if (number != SIGCHLD) {
      if (child_alive) ::kill(child, SIGTERM), ::waitpid(child, nullptr, 0);
      return io.stop();
    }
    signals.async_wait(on_signal);
  };
  signals.async_wait(on_signal);
  io.run();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  sigset_t none;  // the library holds HUP, CHLD, ... from before main, for a Server's loop; this is none
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  try {
    netserver::Options options;
    netserver::add_observability_options(options);
    const netserver::Config config =
        netserver::Config::load(options, netserver::CommandLine::parse(argc, argv, options));
    netserver::log::configure(netserver::LogLevel::notice, "stderr");
    const netserver::ObservabilitySettings settings = netserver::observability_settings(config);
    netserver::register_engine_metrics(netserver::MetricsSchema::global(), {"probe"});
    auto store = netserver::MetricsStore::create(netserver::MetricsSchema::global(), 1);
    return settings.worker_timeout > netserver::Duration::zero() ? watch_child(*store, settings)
                                                                 : run_loop(*store, settings, "stall_probe");
  } catch (const std::exception& error) {
    fmt::print(stderr, "stall_probe: {}\n", error.what());
    return 2;
  }
}
