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

#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/steady_timer.hpp>
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

using Acceptor = asio::basic_socket_acceptor<asio::generic::stream_protocol>;

// A client accepted by the parent, on its way to a child.
struct Client {
  int fd;
  int family;
  std::string peer;  // "127.0.0.1:5555"; a unix-socket client goes by the listener's path
  bool tls;          // it came in on a tls:// listener
};

// --- the child ---------------------------------------------------------------------------------

// A child serves its one client and exits. It takes none of the parent's signals: TERM and HUP let
// it finish its session (the parent kills it after graceful_timeout on TERM), QUIT reaches it
// as the parent's KILL.
int serve_client(Server& server, const std::vector<int>& parent_descriptors, Client client) {
  struct sigaction action {};
  action.sa_handler = SIG_IGN;
  for (int signal : {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU, SIGPIPE})
    ::sigaction(signal, &action, nullptr);
  action.sa_handler = SIG_DFL;
  ::sigaction(SIGCHLD, &action, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int fd : parent_descriptors) ::close(fd);  // the listeners: a child does not accept
  asio::io_context io{single_threaded};
  Worker worker(server, io, WorkerOptions{});
  const int protocol = client.family == AF_UNIX ? 0 : IPPROTO_TCP;
  worker.serve(Transport::Socket(io, asio::generic::stream_protocol(client.family, protocol), client.fd),
               std::move(client.peer), client.tls);
  io.run();  // until the session ended and its socket stopped lingering
  return exit_status::ok;
}

// --- the parent --------------------------------------------------------------------------------

// The parent's policy: accept while fewer than max_servers children live, fork one per client.
class Parent final : public ChildPolicy {
 public:
  Parent(Server& server, const Fork::Settings& settings)
      : server_(server), settings_(settings), supervisor_(server, {.stop_signal = 0, .finish_signal = 0}),
        pause_(supervisor_.io()) {
    supervisor_.on_stop([this](int signal) { signal == 0 ? accept_all() : close_acceptors(signal); });
  }

  void run() {
    open_acceptors();
    supervisor_.run(*this);
  }

  void start() override { accept_all(); }
  std::vector<pid_t> pids() const override {
    std::vector<pid_t> pids(adopted_.begin(), adopted_.end());
    for (const auto& [pid, peer] : children_) pids.push_back(pid);
    return pids;
  }
  void child_exited(pid_t pid, int wait_status) override;
  void stop(int signal) override {
    for (pid_t pid : pids())
      if (signal != 0) ::kill(pid, signal);
  }
  void resume() override {}
  void adopt_leaving(const std::vector<pid_t>& pids) override { adopted_.insert(pids.begin(), pids.end()); }
  const std::string& failure() const override { return failure_; }

 private:
  void open_acceptors();
  void close_acceptors(int signal);
  void accept_all();
  void wait_for_client(std::size_t index);
  void accept_from(std::size_t index);
  void fork_child(Client client);
  bool full() const { return children_.size() >= settings_.max_servers; }

  Server& server_;
  const Fork::Settings& settings_;
  Supervisor supervisor_;
  std::vector<std::unique_ptr<Acceptor>> acceptors_;  // duplicates of the listeners, non-blocking
  std::vector<bool> waiting_;                         // an async wait is in flight on acceptor i
  std::map<pid_t, std::string> children_;             // pid -> the client it serves
  std::set<pid_t> adopted_;                           // the previous image's children
  asio::steady_timer pause_;                          // out of descriptors: accept again shortly
  bool paused_ = false;
  std::string failure_;
};

void Parent::open_acceptors() {
  for (const Listener& listener : server_.listeners()) {
    const int fd = ::fcntl(listener.fd(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) throw Error(system_error_text("dup() of the listener on " + listener.name(), errno));
    auto acceptor = std::make_unique<Acceptor>(supervisor_.io());
    acceptor->assign(asio::generic::stream_protocol(listener.family(), listener.family() == AF_UNIX ? 0 : IPPROTO_TCP), fd);
    boost::system::error_code ignored;
    acceptor->non_blocking(true, ignored);  // accept4 below must never block the parent
    acceptors_.push_back(std::move(acceptor));
    waiting_.push_back(false);
  }
}

// A stop or a restart: no more clients here (a restart's new image accepts them from the backlog).
void Parent::close_acceptors(int signal) {
  if (signal == SIGHUP) {  // the exec may fail: keep the sockets, just stop waiting on them
    boost::system::error_code ignored;
    for (auto& acceptor : acceptors_) acceptor->cancel(ignored);
    return;
  }
  boost::system::error_code ignored;
  for (auto& acceptor : acceptors_) acceptor->close(ignored);
}

void Parent::accept_all() {
  for (std::size_t i = 0; i < acceptors_.size(); ++i) wait_for_client(i);
}

void Parent::wait_for_client(std::size_t index) {
  Acceptor& acceptor = *acceptors_[index];
  if (waiting_[index] || full() || paused_ || supervisor_.stopping() || !acceptor.is_open()) return;
  waiting_[index] = true;
  acceptor.async_wait(Acceptor::wait_read, [this, index](const boost::system::error_code& error) {
    waiting_[index] = false;
    if (error) return;  // cancelled: a stop or a restart
    accept_from(index);
    wait_for_client(index);
  });
}

// Takes every client queued on the listener, up to max_servers children.
void Parent::accept_from(std::size_t index) {
  const int listener = acceptors_[index]->native_handle();
  while (!full() && !supervisor_.stopping()) {
    sockaddr_storage peer{};
    socklen_t length = sizeof peer;
    const int fd = ::accept4(listener, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        log::warning("{}; pausing accepts for 100 ms ({} children)", system_error_text("accept()", errno), children_.size());
        paused_ = true;
        pause_.expires_after(std::chrono::milliseconds(100));
        pause_.async_wait([this](const boost::system::error_code& error) {
          paused_ = false;
          if (!error) accept_all();
        });
      }
      return;  // EAGAIN: the queue is empty
    }
    const std::size_t i = index;
    const Listener& from = server_.listeners()[i];
    std::string name = peer.ss_family == AF_UNIX ? from.name() : format_address(reinterpret_cast<sockaddr*>(&peer), length);
    fork_child(Client{fd, peer.ss_family, std::move(name), from.tls()});
  }
}

void Parent::fork_child(Client client) {
  std::vector<int> descriptors;
  for (auto& acceptor : acceptors_) descriptors.push_back(acceptor->native_handle());
  for (const Listener& listener : server_.listeners()) descriptors.push_back(listener.fd());
  const pid_t pid = supervisor_.spawn([&](int channel) {
    ::close(channel);  // nothing to report: the parent learns all it needs from waitpid
    return serve_client(server_, descriptors, client);
  });
  ::close(client.fd);
  if (pid > 0) children_.emplace(pid, std::move(client.peer));
  else log::error("could not fork for {}: the client is dropped", client.peer);
}

void Parent::child_exited(pid_t pid, int wait_status) {
  if (adopted_.erase(pid)) return log::info("child {} of the previous image {}", pid, describe_wait_status(wait_status));
  auto it = children_.find(pid);
  if (it == children_.end()) return;
  const std::string peer = std::move(it->second);
  children_.erase(it);
  if (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == exit_status::boot_failed) {
    failure_ = fmt::format("child {} for {} could not start (exit status {}); not forking more", pid, peer,
                           exit_status::boot_failed);
  } else if (!WIFEXITED(wait_status) || WEXITSTATUS(wait_status) != exit_status::ok) {
    log::warning("child {} serving {} {}", pid, peer, describe_wait_status(wait_status));
  }
  accept_all();  // a slot is free
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
