#pragma once
/// The one accept path. A listener's readiness becomes an accepted client in accept_client()
/// (the only accept4 in netserver); the Acceptor drives it on an event loop for every process
/// that accepts -- a Multiplex loop, a PreFork child, the Fork parent -- with the same handling
/// of an exhausted descriptor table (pause, one warning, clients wait in the backlog) and of a
/// listener shut down by a stopping server.

#include <sys/socket.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "address_limits.hpp"
#include "netserver/session.hpp"

namespace netserver {

struct Endpoint;

/// A descriptor that is closed unless released.
class OwnedFd {
 public:
  OwnedFd() = default;
  explicit OwnedFd(int fd) : fd_(fd) {}
  ~OwnedFd() { reset(); }
  OwnedFd(OwnedFd&& other) noexcept : fd_(other.release()) {}
  OwnedFd& operator=(OwnedFd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset();

 private:
  int fd_ = -1;
};

/// A client taken off a listener: its socket (non-blocking, close-on-exec), its address and the
/// endpoint it came in on.
struct AcceptedClient {
  OwnedFd socket;
  int family = AF_UNSPEC;
  std::string peer;  ///< "127.0.0.1:5555"; a unix-socket client has no name: the listener's path stands in
  const Endpoint* endpoint = nullptr;
  sockaddr_storage address{};     ///< the peer's address (after the edge: the client's, from a PROXY header)
  socklen_t address_length = 0;   ///< bytes of `address` in use
  // Set by the edge (edge_intake.hpp) before the client is served:
  bool edge_checked = false;                ///< the PROXY header and per-address limits are done
  std::unique_ptr<ProxyInfo> proxy;         ///< what the PROXY header said; null without one
  AddressHold address_hold;                 ///< the client's count in the per-address limits
  std::string early_input;                  ///< bytes read with the PROXY header: the session's first input
};

/// What one accept_client() call found.
enum class AcceptResult {
  accepted,  ///< `out` holds a client
  empty,     ///< nobody waits (another process took them)
  shortage,  ///< out of descriptors or memory: the client stays queued; try again later
  closed,    ///< the listener was shut down (a stopping server): it will never deliver again
  failed,    ///< that client is gone already (ECONNABORTED, ...); the next may be fine
};

/// accept4() on `listener_fd`: the only place netserver accepts a connection. `error` gets the
/// errno of anything but `accepted`/`empty`.
AcceptResult accept_client(int listener_fd, const Endpoint& endpoint, AcceptedClient& out, int& error);

/// Whether the process wants another client now.
enum class Appetite {
  take,     ///< accept the next one
  shortly,  ///< not now, ask again in a moment (another process's turn: accept balance)
  none,     ///< not until resume() (full, held for a restart, stopping)
};

/// Watches a process's copies of the listeners and hands what it accepts to `take`, as long as
/// `appetite` says so. Each readiness is followed by accepts until the queue is empty, the
/// appetite is gone or a batch is done (by default 512: the output of one turn of the loop is not
/// held back behind a queue that refills as fast as it is emptied).
class Acceptor {
 public:
  /// How the listeners are waited on.
  enum class Watch {
    each,       ///< every process accepting wakes for every connection (Multiplex, Fork)
    exclusive,  ///< EPOLLEXCLUSIVE: one of the waiting processes wakes per connection (PreFork)
  };
  struct Callbacks {
    std::function<Appetite()> appetite;
    std::function<void(AcceptedClient)> take;
    /// An accept is activity too (the engine's end-of-batch flush may wait for more).
    std::function<void()> activity;
    /// Accepts per readiness at most (a process serving one client at a time takes one, and lets
    /// its loop finish what the last one left -- a refused client's lingering socket -- first).
    std::size_t batch = 512;
  };

  /// Duplicates the endpoints' listener descriptors (the Listener objects keep their own).
  /// Throws Error when a descriptor cannot be duplicated.
  Acceptor(boost::asio::io_context& io, const std::vector<Endpoint>& endpoints, Watch watch, Callbacks callbacks);
  ~Acceptor();
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  /// Starts (or resumes) waiting for clients. An appetite of `none` holds the acceptor until this
  /// is called again.
  void resume();
  /// Stops waiting until resume(); clients stay queued in the kernel.
  void hold();
  /// Closes this process's descriptors of the listeners: nothing more is accepted here (the
  /// sockets themselves live on in other processes).
  void close();
  /// This process's descriptors of the listeners (a child forked by an accepting parent closes them).
  std::vector<int> descriptors() const;
  /// True once close() ran.
  bool closed() const { return closed_; }

 private:
  struct Watched;
  void rearm();
  void wait(Watched& watched);
  void wait_exclusive();
  void on_ready(Watched& watched);
  void accept_batch(Watched& watched);
  void pause_for_shortage(int error);
  void retry_shortly();

  boost::asio::io_context& io_;
  Watch watch_;
  Callbacks callbacks_;
  std::vector<std::unique_ptr<Watched>> watched_;
  std::unique_ptr<boost::asio::posix::stream_descriptor> exclusive_;  // an epoll set of the listeners
  bool exclusive_waiting_ = false;
  boost::asio::steady_timer pause_;  // a shortage, or a moment for the accept balance
  bool paused_ = false;
  bool held_ = true;
  bool closed_ = false;
  bool shortage_logged_ = false;  // once per shortage: the next accepted client re-arms it
};

}  // namespace netserver
