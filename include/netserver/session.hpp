#pragma once
/// One client connection: its socket, its pending input (bounded by max_line), its output queue
/// (bounded by max_output, one write in flight), its peer address and its timers.

#include <any>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "netserver/buffer.hpp"

namespace netserver {

class Registry;
class Room;
class Server;
class Transport;
class Worker;
struct TlsInfo;

/// The bounds a session enforces, from the configuration.
struct SessionLimits {
  std::size_t max_line = 64 * 1024;     ///< longest input line in bytes, line end not counted
  std::size_t max_output = 1 << 20;     ///< queued output (that the socket did not take) past which the client is dropped
  std::size_t max_output_soft = 0;      ///< queued output the client may stay above only ... (0: no soft limit)
  double max_output_soft_seconds = 60;  ///< ... this many seconds in a row
  double idle_timeout = 0;              ///< seconds without input before closing; 0 = never
  double close_timeout = 10;            ///< seconds a closing session may go without its client taking output
  double linger = 2;                    ///< seconds to wait for the client's EOF after our last byte
};

/// One client. Created by the process's Worker; handlers see it as `Session&` in callbacks.
/// Not thread-safe: every call happens on the process's event loop.
class Session : public std::enable_shared_from_this<Session> {
 public:
  /// Made by Worker only, over the client's byte stream (plain socket or TLS).
  Session(Worker& worker, std::shared_ptr<Transport> transport, std::uint64_t id, std::string peer);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  /// Queues bytes for the client. Ignored once the session is closing. A session whose queue
  /// would pass max_output even after its socket took what it could is disconnected (logged), as
  /// is one whose queue stays above max_output_soft for max_output_soft_seconds: a client that
  /// does not read cannot make the server buffer without bound.
  void send(std::string_view bytes);
  /// send(text + "\r\n").
  void send_line(std::string_view text);
  /// Closes after everything queued has been sent; no more input is delivered.
  void close();
  /// Sends "error: <reason>\r\n", then closes.
  void close_with_error(std::string_view reason);
  /// Calls Handler::on_timeout after `seconds`; a new call replaces the pending one, 0 cancels.
  void set_timeout(double seconds);

  /// The client's address: "127.0.0.1:5555", "[::1]:5555" or "unix:/path/to/socket".
  const std::string& peer() const { return peer_; }
  /// Unique within the process, counting from 1.
  std::uint64_t id() const { return id_; }
  /// True until close() is called or the connection ends.
  bool is_open() const { return state_ == State::open; }
  /// The server running this session (personality name, configuration, hooks).
  Server& server() const;
  /// The sessions alive in this process (what a broadcast reaches).
  Registry& registry() const;
  /// The room called `name` (made on first use): this process's members without a bus, every
  /// process's with `bus:` configured. See netserver/room.hpp.
  Room& room(std::string_view name) const;
  /// The limits this session enforces.
  const SessionLimits& limits() const;
  /// Bytes received from the client so far.
  std::uint64_t bytes_in() const { return bytes_in_; }
  /// Bytes sent to the client so far.
  std::uint64_t bytes_out() const { return bytes_out_; }
  /// Writes that sent output to the client so far (output queued between two turns of the
  /// event loop leaves in one write when the socket takes it).
  std::uint64_t writes() const { return writes_; }
  /// Bytes queued for the client and not yet sent.
  std::size_t queued() const { return out_.size() - out_sent_; }
  /// What the TLS handshake negotiated (netserver/tls.hpp); null on a plaintext connection.
  const TlsInfo* tls() const;

  // --- for handlers that do not consume input as it arrives (Conversation) ---------------------

  /// Stops reading from the client: input already received stays pending, a client's EOF is
  /// held back, and pending input past max_line is not an error while paused (no more is read).
  void pause_input();
  /// Reads again after pause_input(). Pending input (and a held-back EOF) is handed to the
  /// handler again from the event loop, not from inside this call.
  void resume_input();
  /// True between pause_input() and resume_input().
  bool input_paused() const { return input_paused_; }
  /// Runs `callback` from the event loop once nothing is queued for the client (soon, if nothing
  /// is queued now). A later call replaces an earlier one; dropped when the session ends.
  void when_drained(std::function<void()> callback);
  /// The event loop running this session (for timers and coroutines of its handler).
  boost::asio::io_context& io() const;

  /// Per-session state for the handler, default-constructed on first use. Always ask for the
  /// same T for a given handler.
  template <class T>
  T& state() {
    if (!user_state_.has_value()) user_state_.emplace<T>();
    return std::any_cast<T&>(user_state_);
  }

 private:
  friend class Worker;
  friend class Registry;
  friend class Conversation;  // ends a session whose coroutine threw, as dispatch() does
  enum class State { open, closing, finished };

  void start();
  void on_ready(const boost::system::error_code& error);
  void refuse();
  void shutdown_now(std::string_view reason);
  void start_read();
  void on_read(const boost::system::error_code& error, std::size_t bytes);
  std::string_view read_more(std::size_t already);
  void deliver(std::string_view chunk, bool eof);
  void redeliver();
  void handle_eof();
  template <class Callback>
  void dispatch(Callback&& callback);
  void flush();
  void wait_writable();
  void finish(std::string_view reason, bool graceful);
  void retire();
  void arm_idle_timer(std::chrono::steady_clock::duration after);
  void on_idle_timer();
  bool reading_allowed() const;
  std::size_t read_budget() const;
  bool make_room(std::string_view bytes);
  void watch_soft_limit();
  void on_soft_timer();

  Worker& worker_;
  std::shared_ptr<Transport> transport_;  // the byte stream; may outlive the session while it lingers
  std::uint64_t id_;
  std::string peer_;
  State state_ = State::open;
  bool started_serving_ = false;    // start() ran: the worker counts this session until it retires
  bool connected_ = false;          // on_connect ran: the handler knows this session
  InputQueue input_;
  std::string out_;                 // queued output; bytes before out_sent_ are already sent
  std::size_t out_sent_ = 0;
  bool reading_ = false;            // an async read is pending
  bool waiting_writable_ = false;   // the one write in flight is waiting for the socket
  bool flush_scheduled_ = false;    // queued in the worker's end-of-batch flush
  bool in_dispatch_ = false;        // a handler callback for this session is running
  bool peer_eof_ = false;           // the client sent FIN
  bool input_paused_ = false;       // pause_input(): no reads, EOF held back
  std::string end_reason_;
  std::uint64_t bytes_in_ = 0;
  std::uint64_t bytes_out_ = 0;
  std::uint64_t writes_ = 0;
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point last_input_;
  std::chrono::steady_clock::time_point last_output_;  // last write that made progress
  std::unique_ptr<boost::asio::steady_timer> idle_timer_;  // idle (open) or close deadline (closing)
  std::unique_ptr<boost::asio::steady_timer> user_timer_;
  std::unique_ptr<boost::asio::steady_timer> soft_timer_;  // max_output_soft's grace period
  bool above_soft_ = false;                                 // the queue is above max_output_soft ...
  std::chrono::steady_clock::time_point above_soft_since_;  // ... since then
  std::uint64_t user_timer_generation_ = 0;
  std::size_t registry_index_ = 0;
  std::any user_state_;
  std::function<void()> drained_;   // when_drained()
  char inbox_[512];                 // where reads land (a line or two); larger bursts continue in the
                                    // worker's scratch. Small: it is most of an idle session's memory
};

}  // namespace netserver
