#pragma once
/// One client connection as a handler sees it: send, close, timers, its address and counters.
/// The engine makes sessions (applications cannot): each one owns its socket, its pending input
/// (bounded by max_line), its output queue (bounded by max_output, one write in flight), its
/// peer address and its timers.

#include <any>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "netserver/options.hpp"

namespace boost::asio {
class io_context;
}

namespace netserver {

class Registry;
class Room;
class Server;
struct TlsInfo;

/// What a load balancer's PROXY protocol header said about a client (`proxy_protocol`): the
/// balancer's own address and what it told about the client's connection to it. Strings from the
/// header are exactly as sent (any bytes): escape them before logging.
struct ProxyInfo {
  std::string balancer;         ///< the balancer's address (what peer() would be without the header): "10.0.0.5:41234"
  std::string destination;      ///< where the client connected to, on the balancer: "203.0.113.7:443" ("" when not sent)
  int version = 0;              ///< the header's version: 1 or 2
  /// True for a header without a client address (v2 LOCAL -- the balancer's own connection, a
  /// health check -- v1 UNKNOWN, an unspecified family): peer() is then the balancer itself.
  bool local = false;
  std::string authority;        ///< PP2_TYPE_AUTHORITY: the host name the client asked the balancer for (its SNI); "" when absent
  bool ssl = false;             ///< PP2_TYPE_SSL: the client spoke TLS to the balancer
  bool ssl_verified = false;    ///< ... presented a certificate and the balancer verified it
  std::string ssl_version;      ///< PP2_SUBTYPE_SSL_VERSION: "TLSv1.3"; "" when not sent
  std::string ssl_common_name;  ///< PP2_SUBTYPE_SSL_CN: the client certificate's common name; "" when not sent
};

/// The bounds a session enforces, from the configuration.
struct SessionLimits {
  std::size_t max_line = 64 * 1024;     ///< longest input line in bytes, line end not counted
  std::size_t max_output = 1 << 20;     ///< queued output (that the socket did not take) past which the client is dropped
  std::size_t max_output_soft = 0;      ///< queued output the client may stay above only ... (0: no soft limit)
  Duration max_output_soft_for = std::chrono::seconds(60);  ///< ... this long in a row
  Duration idle_timeout = Duration::zero();                  ///< without input before closing; zero: never
  Duration close_timeout = std::chrono::seconds(10);  ///< a closing session may go this long without its client taking output
  Duration linger = std::chrono::seconds(2);          ///< waiting for the client's EOF after our last byte
  /// A room delivery that leaves a member's queue above this many bytes holds the sender's input
  /// until the member drains below it (or is cut); 0: max_output / 4.
  std::size_t room_output_mark = 0;
  /// A member above room_output_mark that takes no byte of its output this long is cut; zero: never.
  Duration output_stall_timeout = std::chrono::seconds(5);
  /// Lines per second read from one client, on average (a token bucket); 0: no limit.
  double max_input_rate = 0;
  /// Lines a client may send at once above max_input_rate before its input is paused.
  std::size_t max_input_burst = 100;

  /// room_output_mark as it applies (its default resolved).
  std::size_t output_mark() const { return room_output_mark != 0 ? room_output_mark : max_output / 4; }
};

/// One client. Handlers see it as `Session&` in their callbacks; the engine owns it (a handler may
/// keep a `shared_from_this()` or a `weak_ptr` past a callback, never a plain reference).
/// Not thread-safe: every call happens on the event loop of the process serving the client.
class Session : public std::enable_shared_from_this<Session> {
 public:
  virtual ~Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Queues bytes for the client. Ignored once the session is closing. A session whose queue
  /// would pass max_output even after its socket took what it could is disconnected (logged), as
  /// is one whose queue stays above max_output_soft for max_output_soft_seconds: a client that
  /// does not read cannot make the server buffer without bound.
  virtual void send(std::string_view bytes) = 0;
  /// send(text + "\r\n").
  void send_line(std::string_view text);
  /// Closes after everything queued has been sent; no more input is delivered.
  virtual void close() = 0;
  /// Sends "error: <reason>\r\n", then closes.
  virtual void close_with_error(std::string_view reason) = 0;
  /// Ends the session now: what is still queued is dropped, the connection is closed at once
  /// (`reason` goes to the log line of its end).
  virtual void abort(std::string_view reason) = 0;
  /// Calls Handler::on_timeout after `after` (`session.set_timeout(30s)`); a new call replaces
  /// the pending one, zero cancels.
  virtual void set_timeout(Duration after) = 0;

  /// The client's address: "127.0.0.1:5555", "[::1]:5555" or "unix:/path/to/socket". Behind a
  /// load balancer sending a PROXY header (`proxy_protocol`), the client's address from the
  /// header; the balancer's own is proxy()->balancer.
  const std::string& peer() const { return peer_; }
  /// What the PROXY header said (the balancer's address, PP2 authority, TLS to the balancer and
  /// whether its client certificate verified); null when the client came without one.
  const ProxyInfo* proxy() const { return proxy_.get(); }
  /// Unique within the process, counting from 1.
  std::uint64_t id() const { return id_; }
  /// True until close() is called or the connection ends.
  virtual bool is_open() const = 0;
  /// The listener the client came in on, as configured ("127.0.0.1:8000", "tls://[::]:8443").
  virtual const std::string& listener() const = 0;
  /// The server running this session (personality name, configuration, hooks).
  virtual Server& server() const = 0;
  /// The sessions alive in this process (what a broadcast reaches).
  virtual Registry& registry() const = 0;
  /// The room called `name` (made on first use): this process's members without a bus, every
  /// process's with `bus:` configured. See netserver/room.hpp.
  virtual Room& room(std::string_view name) const = 0;
  /// The limits this session enforces.
  virtual const SessionLimits& limits() const = 0;
  /// Bytes received from the client so far.
  std::uint64_t bytes_in() const { return bytes_in_; }
  /// Bytes sent to the client so far.
  std::uint64_t bytes_out() const { return bytes_out_; }
  /// Writes that sent output to the client so far (output queued between two turns of the
  /// event loop leaves in one write when the socket takes it).
  std::uint64_t writes() const { return writes_; }
  /// Bytes queued for the client and not yet sent.
  virtual std::size_t queued() const = 0;
  /// What the TLS handshake negotiated (netserver/tls.hpp); null on a plaintext connection.
  virtual const TlsInfo* tls() const = 0;

  // --- for handlers that do not consume input as it arrives (Conversation) ---------------------

  /// Stops reading from the client: input already received stays pending, a client's EOF is
  /// held back, and pending input past max_line is not an error while paused (no more is read).
  virtual void pause_input() = 0;
  /// Reads again after pause_input(). Pending input (and a held-back EOF) is handed to the
  /// handler again from the event loop, not from inside this call.
  virtual void resume_input() = 0;
  /// True between pause_input() and resume_input().
  virtual bool input_paused() const = 0;
  /// Runs `callback` from the event loop once nothing is queued for the client (soon, if nothing
  /// is queued now). A later call replaces an earlier one; dropped when the session ends.
  virtual void when_drained(std::function<void()> callback) = 0;
  /// The event loop running this session (for timers and coroutines of its handler).
  virtual boost::asio::io_context& io() const = 0;

  /// Per-session state for the handler, default-constructed on first use. Always ask for the
  /// same T for a given handler.
  template <class T>
  T& state() {
    if (!user_state_.has_value()) user_state_.emplace<T>();
    return std::any_cast<T&>(user_state_);
  }

 protected:
  /// For the engine's session only.
  Session(std::uint64_t id, std::string peer) : id_(id), peer_(std::move(peer)) {}

  std::uint64_t id_;             ///< see id()
  std::string peer_;             ///< see peer()
  std::uint64_t bytes_in_ = 0;   ///< see bytes_in()
  std::uint64_t bytes_out_ = 0;  ///< see bytes_out()
  std::uint64_t writes_ = 0;     ///< see writes()
  std::unique_ptr<const ProxyInfo> proxy_;  ///< see proxy()

 private:
  std::any user_state_;
};

}  // namespace netserver
