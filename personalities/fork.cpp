#include "fork.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "netserver/config.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "accept.hpp"
#include "child_runtime.hpp"
#include "edge_intake.hpp"
#include "engine.hpp"
#include "server_runtime.hpp"
#include "supervisor.hpp"

namespace netserver {

namespace asio = boost::asio;

namespace {

// A child takes none of the parent's signals: TERM and HUP let it finish its session (the parent
// kills it after graceful_timeout on TERM), QUIT reaches it as the parent's KILL.
const ChildSignals child_signals{
    .handled = {}, .ignored = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU}};

// --- the child ---------------------------------------------------------------------------------

// A child serves its one client and exits once that session has ended -- whatever else its loop
// still holds (a bus connection, a handler's timer).
int serve_client(Server& server, const std::vector<int>& parent_descriptors, AcceptedClient client) {
  for (int fd : parent_descriptors) ::close(fd);  // the listeners: a child does not accept
  server.runtime().close_listener_descriptors();
  asio::io_context io{single_threaded};
  Engine engine(server, io, EngineOptions{});
  engine.serve(std::move(client));
  engine.stop(StopMode::drain, forever, [&io] { io.stop(); });
  io.run();
  return exit_status::ok;
}

// --- the parent --------------------------------------------------------------------------------

// The parent's policy: accept while fewer than max_servers children live, fork one per client.
class Parent final : public ChildPolicy {
 public:
  Parent(Server& server, const Fork::Settings& settings)
      : server_(server),
        settings_(settings),
        supervisor_(server, {.stop_signal = 0, .finish_signal = 0, .child_role = "fork child"}) {
    supervisor_.on_stop([this](int) {  // a stop, or the new image serves
      acceptor_->close();
      if (intake_) intake_->close();
    });
    // A child's client's count in the per-address limits is given back when it is reaped, also
    // while stopping or handing over (when the policy hears nothing).
    supervisor_.on_exited([this](const ChildProcess& child) { holds_.erase(child.pid); });
  }

  void run() {
    ServerRuntime& runtime = server_.runtime();
    if (EdgeIntake::needed(runtime.endpoints(), runtime.address_limits()))
      intake_ = std::make_unique<EdgeIntake>(supervisor_.io(), runtime.edge(), runtime.address_limits(),
                                             EdgeIntake::Callbacks{
                                                 .admitted = [this](AcceptedClient client) {
                                                   fork_child(std::move(client));
                                                 },
                                                 .dropped = [this] {
                                                   if (!supervisor_.stopping()) acceptor_->resume();
                                                 },
                                             });
    acceptor_ = std::make_unique<Acceptor>(supervisor_.io(), runtime.endpoints(), Acceptor::Watch::each,
                                           Acceptor::Callbacks{
                                               .appetite = [this] { return appetite(); },
                                               .take = [this](AcceptedClient client) { take(std::move(client)); },
                                               .activity = nullptr,
                                               .batch = 512,
                                           });
    supervisor_.run(*this, nullptr, child_signals);
  }

  Decisions start(const ProcessTable&) override {
    acceptor_->resume();
    return {};
  }
  Decisions exited(const ProcessTable&, const ChildProcess& child, int wait_status) override;
  const std::string& failure() const override { return failure_; }
  std::string status(const ProcessTable& table) const override {
    return fmt::format("{} session(s) open", table.size());
  }

 private:
  Appetite appetite() const {
    if (supervisor_.stopping()) return Appetite::none;
    const ProcessTable& table = supervisor_.table();
    return table.size() + (intake_ ? intake_->pending() : 0) < settings_.max_servers ? Appetite::take : Appetite::none;
  }

  // The edge (PROXY header, per-address limits) runs here, in the parent, before the fork.
  void take(AcceptedClient client) {
    if (intake_ && !client.edge_checked) return intake_->start(std::move(client));
    fork_child(std::move(client));
  }

  // The client's count in the per-address limits is the parent's: given back when waitpid
  // reports the child gone (a child's copy of it gives back nothing).
  void fork_child(AcceptedClient client) {
    std::vector<int> descriptors = acceptor_->descriptors();
    if (intake_) {
      for (int fd : intake_->descriptors()) descriptors.push_back(fd);
    }
    const std::string peer = client.peer;
    AddressHold hold = std::move(client.address_hold);
    const pid_t pid = supervisor_.spawn(
        [&](int, std::size_t) { return serve_client(server_, descriptors, std::move(client)); },
        child_signals, ChildState::busy, peer, false);  // no channel: the parent learns all it needs from waitpid
    if (pid <= 0) {
      log::error("could not fork for {}: the client is dropped", peer);
      if (!supervisor_.stopping()) acceptor_->resume();
      return;
    }
    if (hold.holds()) holds_.emplace(pid, std::move(hold));
  }

  Server& server_;
  const Fork::Settings& settings_;
  Supervisor supervisor_;
  std::unique_ptr<Acceptor> acceptor_;
  std::unique_ptr<EdgeIntake> intake_;     // after acceptor_: its callbacks use it
  std::map<pid_t, AddressHold> holds_;     // per child: its client's count in the per-address limits
  std::string failure_;
};

Decisions Parent::exited(const ProcessTable&, const ChildProcess& child, int wait_status) {
  if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == exit_status::boot_failed) {
    failure_ = fmt::format("child {} for {} could not start (exit status {}); not forking more", child.pid, child.serving,
                           exit_status::boot_failed);
  } else if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != exit_status::ok) {
    log::warning("child {} serving {} {}", child.pid, child.serving, describe_wait_status(wait_status));
  }
  if (!supervisor_.stopping()) acceptor_->resume();  // a slot is free
  return {};
}

}  // namespace

PersonalityInfo Fork::info() {
  return {
      .name = "fork",
      .summary = "a parent that accepts and forks one child process per client",
      .add_options =
          [](Options& options) {
            options.add(Option::integer("fork.max_servers", 256, 1, 100000,
                                        "children (clients served) at once; at the limit clients wait in the backlog"));
          },
      .create = [](const Config& config) -> std::unique_ptr<Personality> {
        return std::make_unique<Fork>(Settings{static_cast<std::size_t>(config.integer("fork.max_servers"))});
      },
  };
}

void Fork::loop(Server& server) { Parent(server, settings_).run(); }

}  // namespace netserver
