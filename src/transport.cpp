#include "transport.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <cerrno>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

namespace netserver {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// The error a reset left on the socket (reading SO_ERROR clears it), or none.
error_code pending_error(int fd) {
  int error = 0;
  socklen_t size = sizeof error;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size) != 0) error = errno;
  return error ? error_code(error, boost::system::system_category()) : error_code();
}

// POLLERR or POLLHUP now: the kernel reports them whether or not anyone asked.
bool hung_up(int fd) {
  pollfd polled{fd, 0, 0};
  return ::poll(&polled, 1, 0) == 1 && (polled.revents & (POLLERR | POLLHUP)) != 0;
}

}  // namespace

// asio's "wait for an error" completes on EPOLLERR, EPOLLHUP or EPOLLPRI (urgent data), never on
// plain input or a FIN. Its epoll registration is edge-triggered, so a reset that came before the
// wait is looked for first, and urgent data (no error, no hang-up) only re-arms the wait.
void wait_for_reset(Transport::Socket& socket, std::shared_ptr<Transport> keep, Transport::Ready reset,
                    asio::cancellation_slot cancel) {
  const int fd = socket.native_handle();
  if (hung_up(fd)) {
    asio::post(socket.get_executor(), [error = pending_error(fd), reset = std::move(reset)] { reset(error); });
    return;
  }
  socket.async_wait(asio::socket_base::wait_error,
                    asio::bind_cancellation_slot(cancel, [&socket, keep, reset = std::move(reset), cancel](
                                                             const error_code& error) mutable {
                      if (error || !socket.is_open()) return reset(error ? error : asio::error::operation_aborted);
                      if (const error_code failure = pending_error(socket.native_handle())) return reset(failure);
                      if (hung_up(socket.native_handle())) return reset(error_code());
                      wait_for_reset(socket, std::move(keep), std::move(reset), cancel);
                    }));
}

namespace {

// A TCP or unix socket, written with non-blocking send(2) and waited on for writability: the
// Session's queue is written straight from its own buffer, with no copy.
class PlainTransport final : public Transport {
 public:
  explicit PlainTransport(Socket socket) : socket_(std::move(socket)) {}

  void start(Ready ready) override { ready(error_code()); }

  void async_read_some(std::span<char> into, ReadDone done) override {
    socket_.async_read_some(asio::buffer(into.data(), into.size()), std::move(done));
  }

  std::size_t read_now(std::span<char> into, bool& eof) override {
    for (;;) {
      const ssize_t n = ::recv(socket_.native_handle(), into.data(), into.size(), MSG_DONTWAIT);
      if (n > 0) return static_cast<std::size_t>(n);
      if (n == 0) eof = true;
      else if (errno == EINTR) continue;
      return 0;  // EAGAIN: drained. Other errors show up again on the next read.
    }
  }

  std::size_t write_now(std::string_view bytes, error_code& error) override {
    for (;;) {
      const ssize_t n = ::send(socket_.native_handle(), bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n >= 0) return static_cast<std::size_t>(n);
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) error = error_code(errno, boost::system::system_category());
      return 0;
    }
  }

  void async_wait_writable(Ready ready) override { socket_.async_wait(asio::socket_base::wait_write, std::move(ready)); }

  void async_wait_reset(Ready reset, asio::cancellation_slot cancel) override {
    wait_for_reset(socket_, shared_from_this(), std::move(reset), cancel);
  }

  bool shutdown(Duration linger, bool peer_closed, std::function<void()> done) override {
    if (peer_closed || !socket_.is_open()) {
      close();
      return false;
    }
    error_code ignored;
    socket_.shutdown(asio::socket_base::shutdown_send, ignored);
    socket_.cancel(ignored);
    done_ = std::move(done);
    timer_ = std::make_unique<asio::steady_timer>(socket_.get_executor());
    timer_->expires_after(linger);
    timer_->async_wait([self = shared_from_this(), this](const error_code& error) {
      if (!error) close();
    });
    drain();
    return true;
  }

  void close() override {
    error_code ignored;
    socket_.close(ignored);
  }

  bool is_open() const override { return socket_.is_open(); }

 private:
  // Reads and drops input until the client's EOF, an error, or the linger timer's close.
  void drain() {
    const std::span<char> sink = discard_buffer();
    socket_.async_read_some(asio::buffer(sink.data(), sink.size()), [self = shared_from_this(), this](const error_code& error, std::size_t) {
      if (!error) return drain();
      timer_->cancel();
      close();
      done_();
    });
  }

  Socket socket_;
  std::unique_ptr<asio::steady_timer> timer_;  // the linger deadline (made when lingering starts)
  std::function<void()> done_;
};

}  // namespace

std::span<char> discard_buffer() {
  thread_local char sink[4096];
  return sink;
}

std::shared_ptr<Transport> make_plain_transport(Transport::Socket socket) {
  return std::make_shared<PlainTransport>(std::move(socket));
}

}  // namespace netserver
