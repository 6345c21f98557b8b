#include "worker.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/post.hpp>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "signals.hpp"
#include "systemd.hpp"
#include "tls.hpp"

namespace netserver {

namespace asio = boost::asio;
using boost::system::error_code;

struct Worker::Acceptor {
  asio::basic_socket_acceptor<asio::generic::stream_protocol> socket;
  std::string name;
  int family = AF_UNSPEC;
  bool tls = false;
  asio::generic::stream_protocol::endpoint peer;  // filled by accept itself: no getpeername()
  bool pending = false;                            // an accept is in flight

  // "127.0.0.1:5555"; a unix-socket client has no name of its own: the listener's path stands in.
  std::string peer_name() const {
    return family == AF_UNIX ? name : format_address(peer.data(), static_cast<socklen_t>(peer.size()));
  }
};

namespace {

// Out of descriptors or memory: the pending connection stays queued, so accepting again at once
// would spin. These pause accepting briefly instead.
bool is_resource_shortage(const error_code& error) {
  return error == asio::error::no_descriptors || error.value() == ENFILE ||
         error == asio::error::no_buffer_space || error == asio::error::no_memory;
}

}  // namespace

Worker::Worker(Server& server, asio::io_context& io, WorkerOptions options)
    : server_(server),
      io_(io),
      options_(options),
      limits_(server.session_limits()),
      rooms_(server, io),
      accept_pause_(io),
      balance_pause_(io),
      grace_timer_(io),
      scratch_(64 * 1024) {}

Worker::~Worker() = default;

Handler& Worker::handler() { return server_.handler(); }

void Worker::listen(const std::vector<Listener>& listeners) {
  for (const Listener& listener : listeners) {
    const int fd = ::fcntl(listener.fd(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) throw Error(system_error_text("dup() of the listener on " + listener.name(), errno));
    auto acceptor = std::make_unique<Acceptor>(
        Acceptor{asio::basic_socket_acceptor<asio::generic::stream_protocol>(io_), listener.name(), listener.family(),
                 listener.tls(), {}});
    const int protocol = listener.family() == AF_UNIX ? 0 : IPPROTO_TCP;
    acceptor->socket.assign(asio::generic::stream_protocol(listener.family(), protocol), fd);
    acceptors_.push_back(std::move(acceptor));
  }
  accept_all();
}

// --- accepting -----------------------------------------------------------------------------

bool Worker::can_accept() const {
  if (stopping_ || accept_paused_ || accept_held_ || balance_held_) return false;
  return options_.refuse_when_full || registry_.size() + parked_.size() < options_.max_sessions;
}

void Worker::accept_all() {
  for (auto& acceptor : acceptors_) accept(*acceptor);
}

void Worker::accept(Acceptor& acceptor) {
  if (acceptor.pending || !can_accept()) return;
  if (options_.may_accept && !options_.may_accept(registry_.size() + parked_.size())) return hold_for_balance();
  acceptor.pending = true;
  acceptor.socket.async_accept(acceptor.peer, [this, &acceptor](const error_code& error, Transport::Socket socket) {
    acceptor.pending = false;
    on_accept(acceptor, error, std::move(socket));
  });
}

void Worker::on_accept(Acceptor& acceptor, const error_code& error, Transport::Socket socket) {
  if (error == asio::error::operation_aborted) return;
  if (is_resource_shortage(error)) return pause_accepting(error);
  if (error) {
    log::debug("accept() on {}: {}", acceptor.name, error.message());
  } else {
    shortage_logged_ = false;
    ::fcntl(socket.native_handle(), F_SETFD, FD_CLOEXEC);  // a restart's exec must not inherit clients
    serve(std::move(socket), acceptor.peer_name(), acceptor.tls);
  }
  accept(acceptor);
}

// Logged once per shortage: the next successful accept re-arms the warning.
void Worker::pause_accepting(const error_code& error) {
  if (!shortage_logged_)
    log::warning("accept(): {}; pausing accepts until descriptors free up ({} sessions open)", error.message(),
                 registry_.size());
  shortage_logged_ = true;
  accept_paused_ = true;
  stop_accepting();
  accept_pause_.expires_after(std::chrono::milliseconds(100));
  accept_pause_.async_wait([this](const error_code& wait_error) {
    if (wait_error) return;
    accept_paused_ = false;
    accept_all();
  });
}

void Worker::hold_for_balance() {
  balance_held_ = true;
  stop_accepting();
  balance_pause_.expires_after(std::chrono::milliseconds(2));
  balance_pause_.async_wait([this](const error_code& error) {
    if (error) return;
    balance_held_ = false;
    accept_all();
  });
}

// Cancels the accepts in flight; one that already completed delivers its socket to serve(),
// which parks it until a slot frees.
void Worker::stop_accepting() {
  for (auto& acceptor : acceptors_) {
    error_code ignored;
    if (acceptor->pending) acceptor->socket.cancel(ignored);
  }
}

// --- sessions ------------------------------------------------------------------------------

void Worker::serve(Transport::Socket socket, std::string peer, bool tls) {
  if (!stopping_) admit(Accepted{std::move(socket), std::move(peer), tls});
}

void Worker::admit(Accepted client) {
  if (registry_.size() >= options_.max_sessions) {
    if (options_.refuse_when_full) return refuse(client, "server busy");
    parked_.push_back(std::move(client));
    return;
  }
  const std::string& peer = client.peer;
  std::shared_ptr<Transport> transport = client.tls ? TlsContext::installed()->make_transport(std::move(client.socket))
                                                    : make_plain_transport(std::move(client.socket));
  auto session = std::make_shared<Session>(*this, std::move(transport), ++next_id_, peer);
  log::info("connection from {} (session {})", peer, session->id());
  bool allowed = false;
  try {
    server_.post_accept_hook(*session);
    allowed = server_.allow_deny(*session) && server_.allow_deny_hook(*session);
    if (!allowed) {
      log::notice("refused {} (session {}): access denied", peer, session->id());
      server_.request_denied_hook(*session);
      server_.post_process_request_hook(*session);
    }
  } catch (const std::exception& error) {
    log::error("accept hook failed for {}: {}", peer, error.what());
  }
  if (!allowed) {
    session->refuse();
    if (on_session_end_) on_session_end_();
    return;
  }
  registry_.add(session);
  if (!can_accept()) stop_accepting();
  session->start();
}

// Clients accepted while every slot was taken (several listeners) are served as slots free up,
// also while draining: they connected before the stop.
void Worker::serve_parked() {
  while (!parked_.empty() && registry_.size() < options_.max_sessions) {
    Accepted client = std::move(parked_.front());
    parked_.pop_front();
    admit(std::move(client));
  }
}

void Worker::hold_accepting() {
  accept_held_ = true;
  stop_accepting();
}

void Worker::resume_accepting() {
  accept_held_ = false;
  accept_all();
}

// A TLS client is closed without a word: a plaintext line would only garble its handshake.
void Worker::refuse(Accepted& client, std::string_view reason) {
  log::info("refusing {}: {} ({} sessions open)", client.peer, reason, registry_.size());
  if (client.tls) return;
  Transport::Socket& socket = client.socket;
  const std::string line = "error: " + std::string(reason) + "\r\n";
  [[maybe_unused]] const ssize_t ignored = ::send(socket.native_handle(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void Worker::session_ended(Session& session) {
  try {
    server_.post_process_request_hook(session);
  } catch (const std::exception& error) {
    log::error("post_process_request_hook failed for {}: {}", session.peer(), error.what());
  }
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - session.started_).count();
  const TlsInfo* tls = session.tls();
  log::info("closed {} (session {}): {}; {:.3f} s, {} bytes in, {} bytes out{}{}", session.peer(), session.id(),
            session.end_reason_, seconds, session.bytes_in(), session.bytes_out(), tls ? "; " : "",
            tls ? tls->version : "");
  rooms_.forget(session);
  registry_.remove(session);
  if (on_session_end_) on_session_end_();
  serve_parked();
  if (stopping_) return check_stopped();
  accept_all();
}

void Worker::schedule_flush(std::shared_ptr<Session> session) {
  to_flush_.push_back(std::move(session));
  if (flush_posted_) return;
  flush_posted_ = true;
  flush_deferrals_ = 0;
  inputs_at_post_ = inputs_;
  asio::post(io_, [this] { flush_scheduled(); });
}

// Output for other sessions is written "before sleep" (like Redis): while input keeps arriving,
// the flush waits a few turns of the loop so that one write carries many messages; it never waits
// more than max_flush_deferrals turns.
void Worker::flush_scheduled() {
  if (inputs_ != inputs_at_post_ && flush_deferrals_ < max_flush_deferrals) {
    ++flush_deferrals_;
    inputs_at_post_ = inputs_;
    asio::post(io_, [this] { flush_scheduled(); });
    return;
  }
  flush_posted_ = false;
  std::vector<std::shared_ptr<Session>> batch;
  batch.swap(to_flush_);
  for (auto& session : batch) session->flush();
  batch.clear();
  if (to_flush_.empty()) to_flush_.swap(batch);  // keep the capacity for the next batch
}

// --- stopping ------------------------------------------------------------------------------

void Worker::stop(StopMode mode, double grace, std::function<void()> stopped) {
  const bool again = stopping_;
  stopping_ = true;
  stopped_ = std::move(stopped);
  for (auto& acceptor : acceptors_) {
    error_code ignored;
    acceptor->socket.close(ignored);
  }
  if (mode != StopMode::drain) parked_.clear();
  std::vector<std::shared_ptr<Session>> sessions = registry_.sessions_;
  for (auto& session : sessions) {
    if (mode == StopMode::abort) session->shutdown_now("server stopped");
    else if (mode == StopMode::close) session->close();
  }
  if (!again && mode != StopMode::abort && has_clients()) {
    grace_timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(grace)));
    grace_timer_.async_wait([this](const error_code& error) {
      if (error || !has_clients()) return;
      log::warning("graceful timeout: cutting {} session(s) still open", registry_.size());
      parked_.clear();
      for (auto session : std::vector<std::shared_ptr<Session>>(registry_.sessions_))
        session->shutdown_now("graceful timeout");
    });
  }
  check_stopped();
}

void Worker::linger_ended() {
  --lingering_;
  if (stopping_) check_stopped();
}

// Stopped once no session is open, no client waits and no closed socket lingers (a close before
// the client's EOF could turn into a reset that destroys the last reply in flight).
void Worker::check_stopped() {
  if (!stopping_ || has_clients() || lingering_ > 0 || !stopped_) return;
  grace_timer_.cancel();
  auto stopped = std::move(stopped_);
  stopped_ = nullptr;
  stopped();
}

}  // namespace netserver

namespace netserver {

namespace {

// The loop of a personality that serves in this process (single, multiplex): a Worker on one
// io_context, and what each signal does to it.
class ProcessLoop {
 public:
  ProcessLoop(Server& server, const WorkerOptions& options, StopMode graceful, WorkerRole role)
      : server_(server),
        worker_(server, io_, options),
        signals_(io_),
        status_(io_),
        children_(role.supervised ? std::vector<pid_t>{} : server.inherited_children()),
        grace_(server.config().seconds("graceful_timeout")),
        graceful_(graceful),
        role_(role) {}

  void run() {
    worker_.listen(server_.listeners());
    signals_.on({SIGTERM, SIGINT}, [this](int signal) { stop(signal, graceful_); });
    signals_.on({SIGQUIT}, [this](int signal) { stop(signal, StopMode::abort); });
    signals_.on({SIGUSR1}, [this](int) { server_.reopen_log(); });
    if (role_.supervised) {
      signals_.on({SIGHUP}, [this](int) { leave(); });
      const char ready = 'r';
      if (::send(role_.parent_channel, &ready, 1, MSG_NOSIGNAL) != 1) log::warning("worker {}: cannot report to the parent", ::getpid());
    } else {
      reap();  // children that ended during the exec: their SIGCHLD went to the old image
      signals_.on({SIGHUP}, [this](int) { restart(); });
      signals_.on({SIGCHLD}, [this](int) { reap(); });
      if (std::getenv("NOTIFY_SOCKET")) report_status(0);
    }
    io_.run();
  }

 private:
  // A supervised worker told to go (the server restarts, or TTOU): accepts no more, lets its
  // sessions end on their own within graceful_timeout, then exits. Accepting stops first, so that
  // connections already accepted become sessions (as in restart()); the rest wait in the backlog.
  void leave() {
    if (worker_.stopping()) return;
    worker_.hold_accepting();
    asio::post(io_, [this] {
      log::notice("worker {} leaves after its {} session(s) (at most {} s)", ::getpid(), worker_.registry().size(),
                  grace_);
      worker_.stop(StopMode::drain, grace_, [this] {
        signals_.stop();
        io_.stop();
      });
    });
  }

  void stop(int signal, StopMode mode) {
    log::notice("{} received{}: stopping {}({} session(s) open, at most {} s)", signal_name(signal),
                role_.supervised ? fmt::format(" in worker {}", ::getpid()) : "",
                mode == StopMode::abort ? "now " : "gracefully ", worker_.registry().size(), grace_);
    if (!role_.supervised) systemd::notify("STOPPING=1");
    worker_.stop(mode, grace_, [this] {
      status_.cancel();
      signals_.stop();
      io_.stop();
    });
  }

  // HUP: accepting stops first, so that connections already accepted become sessions and the
  // rest wait in the backlog for the new image; the hand-over runs once those are handled.
  void restart() {
    if (worker_.stopping() || !server_.prepare_restart()) return;
    log::notice("HUP received: restarting without closing the listeners ({} session(s) open)",
                worker_.registry().size());
    worker_.hold_accepting();
    asio::post(io_, [this] { hand_over(); });
  }

  void hand_over() {
    pid_t drainer = 0;
    int abort_copy = -1;
    if (worker_.has_clients()) {
      drainer = fork_drainer(io_, worker_, signals_, grace_, abort_copy);
      if (drainer == 0) return;  // this is the copy, which goes on draining
      if (drainer < 0) {         // no restart (logged)
        server_.cancel_restart();
        return worker_.resume_accepting();
      }
    }
    std::vector<pid_t> waiting = children_;
    if (drainer > 0) waiting.push_back(drainer);
    server_.restart(waiting);
    if (drainer > 0) {  // exec failed: the sessions stay here after all; the copy leaves untouched
      (void)::write(abort_copy, "x", 1);
      ::close(abort_copy);
      ::waitpid(drainer, nullptr, 0);
    }
    worker_.resume_accepting();
  }

  // Waits for the drainers of earlier images that have ended (they are ours) and forgets them.
  void reap() {
    std::erase_if(children_, [](pid_t pid) { return ::waitpid(pid, nullptr, WNOHANG) == pid; });
  }

  // Every couple of seconds, tells systemd how many sessions are open (only when systemd listens).
  void report_status(std::size_t last) {
    status_.expires_after(std::chrono::seconds(2));
    status_.async_wait([this, last](const error_code& error) {
      if (error || worker_.stopping()) return;
      const std::size_t now = worker_.registry().size();
      if (now != last) systemd::notify(fmt::format("STATUS={} session(s) open", now));
      report_status(now);
    });
  }

  Server& server_;
  asio::io_context io_{single_threaded};
  Worker worker_;
  SignalWatcher signals_;
  asio::steady_timer status_;
  std::vector<pid_t> children_;  // drainers of earlier images, and of this one's restarts
  double grace_;
  StopMode graceful_;
  WorkerRole role_;
};

}  // namespace

void run_worker(Server& server, const WorkerOptions& options, StopMode graceful, WorkerRole role) {
  ProcessLoop(server, options, graceful, role).run();
}

pid_t fork_drainer(asio::io_context& io, Worker& worker, SignalWatcher& signals, double grace, int& abort_copy) {
  int go_ahead[2];
  if (::pipe2(go_ahead, O_CLOEXEC) != 0) {
    log::error("{}", system_error_text("HUP: pipe() failed while keeping the open sessions; no restart", errno));
    return -1;
  }
  io.notify_fork(asio::execution_context::fork_prepare);
  const pid_t pid = ::fork();
  if (pid != 0) {
    io.notify_fork(asio::execution_context::fork_parent);
    ::close(go_ahead[0]);
    abort_copy = go_ahead[1];  // closed by the exec (close-on-exec): the copy's go-ahead
    if (pid < 0) {
      ::close(go_ahead[1]);
      log::error("{}", system_error_text("HUP: fork() failed while keeping the open sessions; no restart", errno));
    }
    return pid;
  }
  io.notify_fork(asio::execution_context::fork_child);
  ::close(go_ahead[1]);
  char word = 0;
  ssize_t n;
  while ((n = ::read(go_ahead[0], &word, 1)) < 0 && errno == EINTR) {
  }
  ::close(go_ahead[0]);
  if (n != 0) ::_exit(exit_status::ok);  // the exec failed: the original keeps the sessions
  log::notice("pid {} keeps {} session(s) of the previous image until they end", ::getpid(), worker.registry().size());
  signals.on({SIGHUP, SIGUSR1}, [](int) {});  // the new image is the server now
  signals.on({SIGTERM, SIGINT, SIGQUIT}, [&worker, grace](int) {
    worker.stop(StopMode::abort, grace, [] { ::_exit(exit_status::ok); });
  });
  worker.stop(StopMode::drain, grace, [] { ::_exit(exit_status::ok); });
  return 0;
}

}  // namespace netserver
