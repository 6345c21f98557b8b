#include "accept.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

#include "endpoint.hpp"
#include "metrics_engine.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"

namespace netserver {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

constexpr auto shortage_pause = std::chrono::milliseconds(100);
constexpr auto balance_pause = std::chrono::milliseconds(2);

bool is_shortage(int error) { return error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM; }

}  // namespace

void OwnedFd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

AcceptResult accept_client(int listener_fd, const Endpoint& endpoint, AcceptedClient& out, int& error) {
  sockaddr_storage peer{};
  socklen_t length = sizeof peer;
  const int fd = ::accept4(listener_fd, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) {
    error = errno;
    if (error == EAGAIN || error == EWOULDBLOCK) return AcceptResult::empty;
    if (is_shortage(error)) return AcceptResult::shortage;
    if (error == EINVAL || error == EBADF || error == ENOTSOCK) return AcceptResult::closed;
    return AcceptResult::failed;
  }
  count_accepted(endpoint.metrics_index);
  out.socket = OwnedFd(fd);
  out.family = peer.ss_family;
  out.endpoint = &endpoint;
  out.address = peer;
  out.address_length = length;
  out.peer = peer.ss_family == AF_UNIX ? endpoint.name
                                       : format_address(reinterpret_cast<sockaddr*>(&peer), length);
  return AcceptResult::accepted;
}

// One listener as this process watches it: its own descriptor, and whether a wait is in flight.
// Watch::each waits on it through asio; Watch::exclusive keeps it out of asio's epoll (where
// every connection would wake every process) and in the acceptor's own EPOLLEXCLUSIVE set.
struct Acceptor::Watched {
  Watched(int fd, const Endpoint& endpoint) : fd(fd), endpoint(endpoint) {}
  ~Watched() { close(); }
  void close() {
    error_code ignored;
    if (stream) stream->close(ignored);
    else if (fd >= 0) ::close(fd);
    fd = -1;
  }
  int fd;
  std::unique_ptr<asio::posix::stream_descriptor> stream;  // Watch::each: owns fd
  const Endpoint& endpoint;
  bool waiting = false;
  bool gone = false;  // shut down by a stopping server
};

Acceptor::Acceptor(asio::io_context& io, const std::vector<Endpoint>& endpoints, Watch watch, Callbacks callbacks)
    : io_(io), watch_(watch), callbacks_(std::move(callbacks)), pause_(io) {
  for (const Endpoint& endpoint : endpoints) {
    const int fd = ::fcntl(endpoint.listener_fd, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) throw Error(system_error_text("dup() of the listener on " + endpoint.name, errno));
    watched_.push_back(std::make_unique<Watched>(fd, endpoint));
    if (watch_ == Watch::each) watched_.back()->stream = std::make_unique<asio::posix::stream_descriptor>(io, fd);
  }
  if (watch_ != Watch::exclusive) return;
  const int set = ::epoll_create1(EPOLL_CLOEXEC);
  if (set < 0) throw Error(system_error_text("epoll_create1() for the listeners", errno));
  exclusive_ = std::make_unique<asio::posix::stream_descriptor>(io, set);
  for (auto& watched : watched_) {
    epoll_event event{};
    event.events = EPOLLIN | EPOLLEXCLUSIVE;
    event.data.ptr = watched.get();
    if (::epoll_ctl(set, EPOLL_CTL_ADD, watched->fd, &event) != 0)
      throw Error(system_error_text("epoll_ctl() on the listener " + watched->endpoint.name, errno));
  }
}

Acceptor::~Acceptor() { close(); }

void Acceptor::resume() {
  if (closed_) return;
  held_ = false;
  rearm();
}

// Waits again on every listener (a wait armed anew also reports clients that queued meanwhile).
void Acceptor::rearm() {
  if (held_ || paused_ || closed_) return;
  if (exclusive_) return wait_exclusive();
  for (auto& watched : watched_) wait(*watched);
}

void Acceptor::hold() {
  held_ = true;
  error_code ignored;
  for (auto& watched : watched_)
    if (watched->stream) watched->stream->cancel(ignored);
  if (exclusive_) exclusive_->cancel(ignored);
}

void Acceptor::close() {
  if (closed_) return;
  closed_ = true;
  held_ = true;
  pause_.cancel();
  error_code ignored;
  if (exclusive_) exclusive_->close(ignored);
  for (auto& watched : watched_) watched->close();
}

std::vector<int> Acceptor::descriptors() const {
  std::vector<int> fds;
  for (const auto& watched : watched_)
    if (watched->fd >= 0) fds.push_back(watched->fd);
  if (exclusive_) fds.push_back(exclusive_->native_handle());
  return fds;
}

void Acceptor::wait(Watched& watched) {
  if (held_ || paused_ || watched.waiting || watched.gone) return;
  watched.waiting = true;
  watched.stream->async_wait(asio::posix::descriptor_base::wait_read, [this, &watched](const error_code& error) {
    watched.waiting = false;
    if (!error) on_ready(watched);
  });
}

void Acceptor::wait_exclusive() {
  if (held_ || paused_ || exclusive_waiting_) return;
  exclusive_waiting_ = true;
  exclusive_->async_wait(asio::posix::descriptor_base::wait_read, [this](const error_code& error) {
    exclusive_waiting_ = false;
    if (error) return;
    epoll_event events[16];
    const int ready = ::epoll_wait(exclusive_->native_handle(), events, 16, 0);
    for (int i = 0; i < ready && !held_ && !paused_; ++i) accept_batch(*static_cast<Watched*>(events[i].data.ptr));
    wait_exclusive();
  });
}

void Acceptor::on_ready(Watched& watched) {
  accept_batch(watched);
  wait(watched);
}

void Acceptor::accept_batch(Watched& watched) {
  for (std::size_t taken = 0; taken < callbacks_.batch && !held_ && !paused_ && !watched.gone; ++taken) {
    const Appetite appetite = callbacks_.appetite();
    if (appetite == Appetite::shortly) return retry_shortly();
    if (appetite == Appetite::none) {
      held_ = true;  // until the process calls resume()
      return;
    }
    AcceptedClient client;
    int error = 0;
    switch (accept_client(watched.fd, watched.endpoint, client, error)) {
      case AcceptResult::accepted:
        shortage_logged_ = false;
        if (callbacks_.activity) callbacks_.activity();
        callbacks_.take(std::move(client));
        break;
      case AcceptResult::empty: return;
      case AcceptResult::shortage: return pause_for_shortage(error);
      case AcceptResult::closed:
        watched.gone = true;
        if (exclusive_) ::epoll_ctl(exclusive_->native_handle(), EPOLL_CTL_DEL, watched.fd, nullptr);
        return;
      case AcceptResult::failed:
        log::debug("accept() on {}: {}", watched.endpoint.name, std::strerror(error));
        break;
    }
  }
}

// Out of descriptors or memory: the pending connection stays queued, so accepting again at once
// would spin. Accepting pauses briefly instead, logged once per shortage.
void Acceptor::pause_for_shortage(int error) {
  if (!shortage_logged_)
    log::warning("{}; pausing accepts until descriptors free up (clients wait in the backlog)",
                 system_error_text("accept()", error));
  shortage_logged_ = true;
  paused_ = true;
  pause_.expires_after(shortage_pause);
  pause_.async_wait([this](const error_code& wait_error) {
    paused_ = false;
    if (!wait_error) rearm();
  });
}

// Another process's turn (the accept balance): ask again in a moment.
void Acceptor::retry_shortly() {
  if (paused_) return;
  paused_ = true;
  pause_.expires_after(balance_pause);
  pause_.async_wait([this](const error_code& wait_error) {
    paused_ = false;
    if (!wait_error) rearm();
  });
}

}  // namespace netserver
