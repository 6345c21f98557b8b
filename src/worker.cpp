#include "worker.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/basic_socket_acceptor.hpp>
#include <boost/asio/post.hpp>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "signals.hpp"

namespace netserver {

namespace asio = boost::asio;
using boost::system::error_code;

struct Worker::Acceptor {
  asio::basic_socket_acceptor<asio::generic::stream_protocol> socket;
  std::string name;
  bool pending = false;  // an accept is in flight
};

namespace {

std::string peer_name(Session::Socket& socket) {
  error_code error;
  auto remote = socket.remote_endpoint(error);
  if (error) return "(unknown peer)";
  if (remote.protocol().family() == AF_UNIX) remote = socket.local_endpoint(error);  // clients are unnamed
  return format_address(remote.data(), static_cast<socklen_t>(remote.size()));
}

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
      accept_pause_(io),
      grace_timer_(io),
      scratch_(64 * 1024) {}

Worker::~Worker() = default;

Handler& Worker::handler() { return server_.handler(); }

void Worker::listen(const std::vector<Listener>& listeners) {
  for (const Listener& listener : listeners) {
    const int fd = ::fcntl(listener.fd(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) throw Error(system_error_text("dup() of the listener on " + listener.name(), errno));
    auto acceptor = std::make_unique<Acceptor>(Acceptor{asio::basic_socket_acceptor<asio::generic::stream_protocol>(io_), listener.name()});
    const int protocol = listener.family() == AF_UNIX ? 0 : IPPROTO_TCP;
    acceptor->socket.assign(asio::generic::stream_protocol(listener.family(), protocol), fd);
    acceptors_.push_back(std::move(acceptor));
  }
  accept_all();
}

// --- accepting -----------------------------------------------------------------------------

bool Worker::can_accept() const {
  if (stopping_ || accept_paused_) return false;
  if (options_.max_requests != 0 && served_ + parked_.size() >= options_.max_requests) return false;
  return options_.refuse_when_full || registry_.size() + parked_.size() < options_.max_sessions;
}

void Worker::accept_all() {
  for (auto& acceptor : acceptors_) accept(*acceptor);
}

void Worker::accept(Acceptor& acceptor) {
  if (acceptor.pending || !can_accept()) return;
  acceptor.pending = true;
  acceptor.socket.async_accept([this, &acceptor](const error_code& error, Session::Socket socket) {
    acceptor.pending = false;
    on_accept(acceptor, error, std::move(socket));
  });
}

void Worker::on_accept(Acceptor& acceptor, const error_code& error, Session::Socket socket) {
  if (error == asio::error::operation_aborted) return;
  if (is_resource_shortage(error)) return pause_accepting(error);
  if (error) {
    log::debug("accept() on {}: {}", acceptor.name, error.message());
  } else {
    shortage_logged_ = false;
    serve(std::move(socket));
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

// Cancels the accepts in flight; one that already completed delivers its socket to serve(),
// which parks it until a slot frees.
void Worker::stop_accepting() {
  for (auto& acceptor : acceptors_) {
    error_code ignored;
    if (acceptor->pending) acceptor->socket.cancel(ignored);
  }
}

// --- sessions ------------------------------------------------------------------------------

void Worker::serve(Session::Socket socket) {
  if (stopping_) return;
  if (registry_.size() >= options_.max_sessions) {
    if (!options_.refuse_when_full) return parked_.push_back(std::move(socket));
    return refuse(socket, "server busy");
  }
  ++served_;
  std::string peer = peer_name(socket);
  auto session = std::make_shared<Session>(*this, std::move(socket), ++next_id_, peer);
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
  if (!allowed) return session->refuse();
  registry_.add(session);
  if (!can_accept()) stop_accepting();
  if (on_session_start_) on_session_start_();
  session->start();
}

void Worker::refuse(Session::Socket& socket, std::string_view reason) {
  log::info("refusing {}: {} ({} sessions open)", peer_name(socket), reason, registry_.size());
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
  log::info("closed {} (session {}): {}; {:.3f} s, {} bytes in, {} bytes out", session.peer(), session.id(),
            session.end_reason_, seconds, session.bytes_in(), session.bytes_out());
  registry_.remove(session);
  if (on_session_end_) on_session_end_();
  if (stopping_) return check_stopped();
  while (!parked_.empty() && registry_.size() < options_.max_sessions) {
    Session::Socket next = std::move(parked_.front());
    parked_.pop_front();
    serve(std::move(next));
  }
  if (options_.max_requests != 0 && served_ >= options_.max_requests && registry_.size() == 0 && on_exhausted_)
    return on_exhausted_();
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
  parked_.clear();
  std::vector<std::shared_ptr<Session>> sessions = registry_.sessions_;
  for (auto& session : sessions) {
    if (mode == StopMode::abort) session->shutdown_now("server stopped");
    else if (mode == StopMode::close) session->close();
  }
  if (!again && mode != StopMode::abort && !sessions.empty()) {
    grace_timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(grace)));
    grace_timer_.async_wait([this](const error_code& error) {
      if (error || registry_.size() == 0) return;
      log::warning("graceful timeout: cutting {} session(s) still open", registry_.size());
      for (auto session : std::vector<std::shared_ptr<Session>>(registry_.sessions_))
        session->shutdown_now("graceful timeout");
    });
  }
  check_stopped();
}

void Worker::check_stopped() {
  if (!stopping_ || registry_.size() != 0 || !stopped_) return;
  grace_timer_.cancel();
  auto stopped = std::move(stopped_);
  stopped_ = nullptr;
  stopped();
}

}  // namespace netserver

namespace netserver {

void run_worker(Server& server, const WorkerOptions& options, StopMode graceful) {
  asio::io_context io(single_threaded);
  Worker worker(server, io, options);
  worker.listen(server.listeners());
  SignalWatcher signals(io);
  const double grace = server.config().seconds("graceful_timeout");
  auto stop = [&](StopMode mode) {
    worker.stop(mode, grace, [&] {
      signals.stop();
      io.stop();
    });
  };
  signals.on({SIGTERM, SIGINT}, [&](int signal) {
    log::notice("{} received: stopping gracefully ({} session(s) open, at most {} s)", signal_name(signal),
                worker.registry().size(), grace);
    stop(graceful);
  });
  signals.on({SIGQUIT}, [&](int) {
    log::notice("QUIT received: stopping now");
    stop(StopMode::abort);
  });
  io.run();
}

}  // namespace netserver
