#pragma once
/// SessionImpl: the engine's session. It implements the public Session over a Transport and runs
/// one client's lifecycle as an explicit state machine:
///
///   admitting ──> handshaking ──> open ──> closing ──> lingering
///       │              │            │          │    └──────────> finished
///       └──(refused)───┴────────────┴──────────┴──(cut, failed)──> finished
///
/// - admitting: accepted, the accept hooks and access rules run; output queued here is what a
///   refused client is told (request_denied_hook). The handler does not know the session.
/// - handshaking: the transport gets ready (TLS handshake); sends are ignored, nothing is read.
/// - open: the handler's: input is delivered, output sent, timers run.
/// - closing: close() was called: no more input; queued output is delivered (close_timeout bounds a
///   client that stops taking it), then the stream is ended gracefully.
/// - lingering: our side is done (on_close runs): the socket waits, at most `linger`, for the
///   client's EOF so that unread input cannot turn the close into a reset that destroys our last
///   reply. The transport ends the linger on its own and tells the engine, which counts it.
/// - finished: the socket is closed; nothing more happens (on_close runs, the engine forgets it).
///
/// Operations are defined per phase (see each member). The engine calls admit(), start(),
/// refuse() and cut(); everything else comes from the transport, timers and the handler.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>

#include "address_limits.hpp"
#include "stall_watch.hpp"
#include "netserver/buffer.hpp"
#include "netserver/session.hpp"
#include "token_bucket.hpp"
#include "transport.hpp"

namespace netserver {

class Engine;
class Handler;
struct Endpoint;

class SessionImpl final : public Session {
 public:
  enum class Phase { admitting, handshaking, open, closing, lingering, finished };
  using Clock = std::chrono::steady_clock;

  /// A session for a client accepted on `endpoint`, served by `engine`; phase admitting.
  SessionImpl(Engine& engine, const Endpoint& endpoint, std::shared_ptr<Transport> transport, std::uint64_t id,
              std::string peer);
  ~SessionImpl() override;

  // --- Session -----------------------------------------------------------------------------
  void send(std::string_view bytes) override;
  void close() override;
  void close_with_error(std::string_view reason) override;
  void abort(std::string_view reason) override;
  void set_timeout(Duration after) override;
  bool is_open() const override { return phase_ == Phase::open; }
  const std::string& listener() const override;
  Server& server() const override;
  Registry& registry() const override;
  Room& room(std::string_view name) const override;
  const SessionLimits& limits() const override;
  std::size_t queued() const override { return out_.size() - out_sent_; }
  const TlsInfo* tls() const override;
  void pause_input() override;
  void resume_input() override;
  bool input_paused() const override { return input_.paused; }
  void when_drained(std::function<void()> callback) override;
  boost::asio::io_context& io() const override;

  // --- for the engine ----------------------------------------------------------------------
  /// admitting -> handshaking: the transport starts (TLS: the handshake); the handler hears of
  /// the session once it is ready.
  void start();
  /// admitting -> finished (or lingering): a refused client; what the hooks queued is sent if
  /// the socket takes it at once.
  void refuse();
  /// Any phase -> finished (or lingering for `graceful`): the engine ends the session
  /// (graceful timeout, server stop). `reason` goes to the log line.
  void cut(std::string_view reason) { finish(reason, false); }
  /// Writes what is queued now (the engine's end-of-batch flush).
  void flush();
  Phase phase() const { return phase_; }
  /// Why the session ended, for the log line ("client closed", "timed out ...").
  const std::string& end_reason() const { return end_reason_; }
  /// When the session was accepted.
  Clock::time_point started() const { return started_; }
  /// The session's slot in the engine's table (kept by the table).
  std::size_t table_index = 0;
  /// The client's count in the per-address limits, given back when the session ends.
  AddressHold address_hold;
  /// What the client's PROXY header said (Session::proxy()).
  void set_proxy(std::unique_ptr<const ProxyInfo> proxy) { proxy_ = std::move(proxy); }
  /// Bytes the client sent right after its PROXY header, read with it: its first input, handed
  /// to the handler after on_connect as if read then.
  void set_early_input(std::string bytes);

  /// A Conversation's coroutine ended: the session closes as after close(), noting "client closed"
  /// when the client had finished sending.
  void conversation_ended(bool client_finished);
  /// A Conversation's coroutine threw: the session ends now (logged by the caller).
  void conversation_failed() { finish("handler failed", false); }

  /// A room queued a message for this session. Above room_output_mark, the sender -- the session
  /// whose callback runs now, else `sender` (the publisher the room knows of, or null) -- stops
  /// being read until this queue drops back below the mark or this session ends, and the stall
  /// watch starts: taking no byte for output_stall_timeout ends this session.
  void room_delivered(SessionImpl* sender) {
    if (queued() > output_mark_) above_mark(sender);  // the fast path: one comparison per delivery
  }
  /// Holds on this session's input: recipients above the mark its room deliveries wait on, and a
  /// bus window full of its messages (its input is not read while there is one).
  std::size_t held_by() const { return input_.holds; }
  /// One more hold on this session's input ...
  void hold_input() { ++input_.holds; }
  /// ... and one less: reads again when it was the last.
  void release_input() { unheld(); }
  Engine& engine() const { return engine_; }

 private:
  // --- lifecycle ---
  void on_ready(const boost::system::error_code& error);
  void take_early_input();
  void finish(std::string_view reason, bool graceful);
  void retire();
  template <class Callback>
  void dispatch(CallbackKind kind, Callback&& callback);
  Handler& handler() const;

  // --- input ---
  bool may_read() const;
  std::size_t read_budget() const;
  void start_read();
  void on_read(const boost::system::error_code& error, std::size_t bytes);
  std::string_view read_more(std::size_t already);
  void deliver(std::string_view chunk, bool eof);
  void redeliver();
  void on_client_finished();
  void watch_for_reset();
  void arm_reset_watch();
  void stop_watching_for_reset();
  void meter_input(std::string_view chunk);

  // --- output ---
  bool make_room(std::string_view bytes);
  void watch_soft_limit();
  void on_soft_timer();
  void wait_writable();
  void drained();

  // --- fan-out: senders waiting on this queue, and the stall watch ---
  void above_mark(SessionImpl* sender);
  void hold(SessionImpl& sender);
  void release_senders();
  void unheld();
  void watch_stall();
  void arm_stall_timer(Clock::duration after);
  void on_stall_timer();

  // --- timers ---
  void arm_deadline(Clock::duration after);
  void on_deadline();

  Engine& engine_;
  const Endpoint& endpoint_;
  std::shared_ptr<Transport> transport_;  // the byte stream; may outlive the session while it lingers
  Phase phase_ = Phase::admitting;
  bool handler_knows_ = false;  // on_connect ran: on_close will too

  // Input: what the client sent and the handler left, and whether more may be read.
  struct Input {
    InputQueue pending;
    bool reading = false;      // a read is in flight
    bool paused = false;       // pause_input(): no reads, the client's EOF held back
    bool client_done = false;  // the client sent FIN (or close_notify)
    enum class ResetWatch : std::uint8_t { off, scheduled, armed } reset_watch = ResetWatch::off;  // while paused
    std::uint32_t holds = 0;   // recipients above the mark this session's deliveries wait on
    bool over_rate = false;    // past max_input_rate: not read until the bucket refills
    explicit Input(std::size_t limit) : pending(limit) {}
  } input_;

  // Output: queued bytes (those before out_sent_ are sent), and the write machinery's state.
  std::string out_;
  std::size_t out_sent_ = 0;
  bool waiting_writable_ = false;  // the one write in flight waits for the socket
  bool flush_scheduled_ = false;   // queued in the engine's end-of-batch flush
  bool in_callback_ = false;       // a handler callback for this session is running
  bool above_soft_ = false;        // the queue is above max_output_soft ...
  Clock::time_point above_soft_since_;  // ... since then
  std::function<void()> drained_;  // when_drained()

  // Fan-out: the senders held by this queue (by session id, which is never reused), and whether
  // the queue is above the mark through room deliveries since last_taken_ without taking a byte.
  std::vector<std::pair<std::uint64_t, std::weak_ptr<SessionImpl>>> holding_;
  std::size_t output_mark_;  // limits().output_mark(), at hand for room_delivered()
  bool stall_watch_ = false;
  bool stall_timer_armed_ = false;
  Clock::time_point last_taken_;
  std::unique_ptr<boost::asio::steady_timer> stall_timer_;  // output_stall_timeout
  std::unique_ptr<TokenBucket> input_rate_;                 // max_input_rate, when set
  std::unique_ptr<std::string> early_input_;                // set_early_input(), until opened
  std::unique_ptr<boost::asio::steady_timer> rate_timer_;   // ... wakes the reads it paused

  std::string end_reason_;
  Clock::time_point started_;
  Clock::time_point last_input_;
  Clock::time_point last_output_;  // last write that made progress
  std::unique_ptr<boost::asio::steady_timer> deadline_;    // idle (open) or close deadline (closing)
  std::unique_ptr<boost::asio::steady_timer> user_timer_;  // set_timeout()
  std::unique_ptr<boost::asio::steady_timer> soft_timer_;  // max_output_soft's grace period
  std::unique_ptr<boost::asio::cancellation_signal> reset_watch_;  // ends watch_for_reset() before a read
  std::uint64_t user_timer_generation_ = 0;
  char inbox_[512];  // where reads land (a line or two); larger bursts continue in the engine's
                     // scratch. Small: it is most of an idle session's memory
};

}  // namespace netserver
