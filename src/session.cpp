#include "netserver/session.hpp"

#include <cstring>
#include <functional>
#include <utility>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include "netserver/handler.hpp"
#include "netserver/log.hpp"
#include "netserver/registry.hpp"
#include "netserver/server.hpp"
#include "transport.hpp"
#include "worker.hpp"

namespace netserver {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

// Queued output this large is written at once instead of waiting for the end of the batch.
constexpr std::size_t eager_flush_bytes = 32 * 1024;

Clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

}  // namespace

Session::Session(Worker& worker, std::shared_ptr<Transport> transport, std::uint64_t id, std::string peer)
    : worker_(worker),
      transport_(std::move(transport)),
      id_(id),
      peer_(std::move(peer)),
      input_(worker.limits().max_line + 2),  // room for a longest line and its CRLF
      started_(Clock::now()),
      last_input_(started_) {}

Session::~Session() = default;

Server& Session::server() const { return worker_.server(); }
Registry& Session::registry() const { return worker_.registry(); }
Room& Session::room(std::string_view name) const { return worker_.rooms().room(name); }
asio::io_context& Session::io() const { return worker_.io(); }
const SessionLimits& Session::limits() const { return worker_.limits(); }
const TlsInfo* Session::tls() const { return transport_->tls(); }

// --- lifecycle -------------------------------------------------------------------------------

// The handler hears of the session once its transport is ready (TLS: after the handshake).
void Session::start() {
  started_serving_ = true;
  transport_->start([self = shared_from_this()](const boost::system::error_code& error) { self->on_ready(error); });
}

void Session::on_ready(const boost::system::error_code& error) {
  if (state_ == State::finished) return;
  if (error) return finish(fmt::format("TLS handshake failed: {}", error.message()), false);
  if (state_ != State::open) return;  // closed while handshaking: the queued flush ends it
  connected_ = true;
  dispatch([this] { worker_.handler().on_connect(*this); });
  if (state_ == State::finished) return;
  if (limits().idle_timeout > 0) {
    idle_timer_ = std::make_unique<asio::steady_timer>(worker_.io());
    arm_idle_timer(to_duration(limits().idle_timeout));
  }
  start_read();
}

// Runs a handler callback: sends made inside it are flushed once it returns; an exception loses
// this session only.
template <class Callback>
void Session::dispatch(Callback&& callback) {
  if (state_ == State::finished) return;
  in_dispatch_ = true;
  try {
    callback();
  } catch (const std::exception& error) {
    in_dispatch_ = false;
    log::error("handler failed for {} (session {}): {}", peer_, id_, error.what());
    finish("handler failed", false);
    return;
  } catch (...) {
    in_dispatch_ = false;
    log::error("handler failed for {} (session {}): unknown exception", peer_, id_);
    finish("handler failed", false);
    return;
  }
  in_dispatch_ = false;
  flush();
}

void Session::close() {
  if (state_ != State::open) return;
  state_ = State::closing;
  user_timer_.reset();
  if (!in_dispatch_) flush();  // finishes at once when nothing is queued
  if (state_ != State::closing) return;
  // What is still queued gets close_timeout seconds of no progress at most: a client that stops
  // reading cannot keep a closing session (and its descriptor) forever.
  last_output_ = Clock::now();
  if (!idle_timer_) idle_timer_ = std::make_unique<asio::steady_timer>(worker_.io());
  arm_idle_timer(to_duration(limits().close_timeout));
}

void Session::close_with_error(std::string_view reason) {
  if (state_ != State::open) return;
  out_.append("error: ").append(reason).append("\r\n");
  if (end_reason_.empty()) end_reason_ = std::string(reason);
  close();
}

// A client refused by access control: whatever request_denied_hook queued is sent if the socket
// takes it at once, and the handler never hears of the session.
void Session::refuse() {
  flush();
  finish("refused", true);
}

void Session::shutdown_now(std::string_view reason) { finish(reason, false); }

// The session is over: no more reads, writes or callbacks. `graceful` half-closes and lingers
// for the client's EOF; otherwise the socket is closed at once (dropping unsent output).
void Session::finish(std::string_view reason, bool graceful) {
  if (state_ == State::finished) return;
  state_ = State::finished;
  if (end_reason_.empty()) end_reason_ = std::string(reason);
  idle_timer_.reset();
  user_timer_.reset();
  input_.clear();
  drained_ = nullptr;
  if (!graceful) transport_->close();
  else if (transport_->shutdown(limits().linger, peer_eof_, [&worker = worker_] { worker.linger_ended(); }))
    worker_.linger_started();
  // Callbacks and registry removal run later: this may be inside another session's broadcast.
  asio::post(worker_.io(), [self = shared_from_this()] { self->retire(); });
}

void Session::retire() {
  if (!started_serving_) return;  // refused: the worker already forgot it
  try {
    if (connected_) worker_.handler().on_close(*this);
  } catch (const std::exception& error) {
    log::error("handler on_close failed for {} (session {}): {}", peer_, id_, error.what());
  }
  worker_.session_ended(*this);
}

// --- input -------------------------------------------------------------------------------------

bool Session::reading_allowed() const {
  // Backpressure: a client that does not read our replies stops being read from.
  return connected_ && !reading_ && !input_paused_ && state_ != State::finished && !peer_eof_ &&
         queued() <= limits().max_output / 2;
}

void Session::start_read() {
  if (!reading_allowed()) return;
  reading_ = true;
  const std::size_t room = input_.room();
  const std::size_t size = room == 0 || room > sizeof inbox_ ? sizeof inbox_ : room;
  transport_->async_read_some({inbox_, size}, [self = shared_from_this()](const boost::system::error_code& error,
                                                                        std::size_t bytes) { self->on_read(error, bytes); });
}

void Session::on_read(const boost::system::error_code& error, std::size_t bytes) {
  reading_ = false;
  if (state_ == State::finished || error == asio::error::operation_aborted) return;
  if (error == asio::error::eof) return handle_eof();
  if (error) return finish(error.message(), false);
  bytes_in_ += bytes;
  if (idle_timer_) last_input_ = Clock::now();  // only the idle timeout needs it
  worker_.note_input();
  if (state_ == State::open) {
    std::string_view chunk(inbox_, bytes);
    if (bytes == sizeof inbox_) chunk = read_more(bytes);
    deliver(chunk, false);
    if (peer_eof_) return handle_eof();
  }
  start_read();
}

// The inbox filled up, so more is probably waiting: continue in the worker's scratch buffer
// (shared by every session of the process) until the socket is drained or the input bound is hit.
std::string_view Session::read_more(std::size_t already) {
  std::span<char> scratch = worker_.scratch();
  std::memcpy(scratch.data(), inbox_, already);
  const std::size_t room = input_.room();
  const std::size_t limit = room == 0 || room > scratch.size() ? scratch.size() : room;
  std::size_t total = already;
  while (total < limit && !peer_eof_) {
    const std::size_t n = transport_->read_now(scratch.subspan(total, limit - total), peer_eof_);
    if (n == 0) break;
    total += n;
    bytes_in_ += n;
  }
  return {scratch.data(), total};
}

void Session::deliver(std::string_view chunk, bool eof) {
  bool fits = true;
  dispatch([&] {
    fits = input_.feed(chunk, eof, [this](Buffer& input) {
      if (state_ == State::open) worker_.handler().on_input(*this, input);
    });
  });
  // While paused, what is pending may be complete lines the handler takes later; no more is
  // read meanwhile, so it stays bounded by one read.
  if (!fits && !input_paused_) close_with_error("line too long");
}

void Session::pause_input() { input_paused_ = true; }

void Session::resume_input() {
  if (!input_paused_) return;
  input_paused_ = false;
  // Inside a callback the caller reads on once the callback returns (see on_read); a read
  // started here could land in inbox_ under the input the handler is still working through.
  if (in_dispatch_ || state_ != State::open) return;
  if (input_.size() == 0 && !peer_eof_) return start_read();
  asio::post(worker_.io(), [self = shared_from_this()] { self->redeliver(); });
}

// Hands pending input (and an EOF held back while paused) to the handler again.
void Session::redeliver() {
  if (state_ != State::open || input_paused_) return;
  if (input_.size() > 0) deliver({}, false);
  if (peer_eof_) return handle_eof();
  start_read();
}

void Session::handle_eof() {
  peer_eof_ = true;
  if (input_paused_ && state_ == State::open) return;  // resume_input() goes on from here
  if (state_ == State::open) {
    if (input_.size() > 0) deliver({}, true);
    dispatch([this] { worker_.handler().on_eof(*this); });
    if (end_reason_.empty()) end_reason_ = "client closed";
    close();
  }
  if (state_ == State::closing && queued() == 0) finish("client closed", true);
}

// --- output ------------------------------------------------------------------------------------

void Session::send(std::string_view bytes) {
  if (state_ != State::open || bytes.empty()) return;
  if (started_serving_ && !connected_) return;  // still handshaking: not one of the clients yet
  if (queued() + bytes.size() > limits().max_output) {
    log::warning("disconnecting {} (session {}): it is not reading, and its output queue would pass {} bytes",
                 peer_, id_, limits().max_output);
    return finish("output queue full", false);
  }
  out_.append(bytes);
  if (waiting_writable_) return;  // the write in flight takes it along
  if (queued() >= eager_flush_bytes) return flush();  // batching only pays for small writes
  if (!in_dispatch_ && !flush_scheduled_) {
    flush_scheduled_ = true;
    worker_.schedule_flush(shared_from_this());
  }
}

void Session::send_line(std::string_view text) {
  if (state_ != State::open) return;
  send(text);
  send("\r\n");
}

// Writes what is queued without blocking; if the socket is full, waits for it (the one write in
// flight) and gathers everything queued meanwhile into the next write.
void Session::flush() {
  flush_scheduled_ = false;
  if (state_ == State::finished || waiting_writable_) return;
  while (out_sent_ < out_.size()) {
    boost::system::error_code error;
    const std::size_t n = transport_->write_now(std::string_view(out_).substr(out_sent_), error);
    if (error) return finish(error.message(), false);
    if (n == 0) return wait_writable();
    out_sent_ += n;
    bytes_out_ += n;
    if (state_ == State::closing) last_output_ = Clock::now();  // only the close deadline needs it
  }
  out_.clear();
  out_sent_ = 0;
  if (out_.capacity() > 64 * 1024) std::string().swap(out_);
  if (drained_) asio::post(worker_.io(), std::exchange(drained_, nullptr));
  if (state_ == State::closing) return finish(end_reason_.empty() ? "server closed" : end_reason_, true);
  // Resumes a read paused for backpressure -- but not from inside a handler: a read may land in
  // inbox_ at once, under the input the handler is still working through.
  if (!in_dispatch_) start_read();
}

void Session::wait_writable() {
  waiting_writable_ = true;
  if (out_sent_ > 64 * 1024 && out_sent_ > out_.size() / 2) {
    out_.erase(0, out_sent_);
    out_sent_ = 0;
  }
  transport_->async_wait_writable([self = shared_from_this()](const boost::system::error_code& error) {
    self->waiting_writable_ = false;
    if (error == asio::error::operation_aborted) return;
    if (error) return self->finish(error.message(), false);
    self->flush();
  });
}

void Session::when_drained(std::function<void()> callback) {
  if (state_ == State::finished) return;
  if (queued() == 0) return asio::post(worker_.io(), std::move(callback));
  drained_ = std::move(callback);
}

// --- timers ------------------------------------------------------------------------------------

void Session::set_timeout(double seconds) {
  if (state_ != State::open) return;
  const std::uint64_t generation = ++user_timer_generation_;
  if (seconds <= 0) {
    user_timer_.reset();
    return;
  }
  if (!user_timer_) user_timer_ = std::make_unique<asio::steady_timer>(worker_.io());
  user_timer_->expires_after(to_duration(seconds));
  user_timer_->async_wait([self = shared_from_this(), generation](const boost::system::error_code& error) {
    if (error || generation != self->user_timer_generation_ || self->state_ != State::open) return;
    self->dispatch([&] { self->worker_.handler().on_timeout(*self); });
  });
}

// One timer bounds both waits: an open session's wait for input (timeout) and a closing
// session's wait for its client to take the output (close_timeout). It is not re-armed on every
// read or write: when it fires it checks the time of the last progress and sleeps again for the
// remainder.
void Session::arm_idle_timer(Clock::duration after) {
  idle_timer_->expires_after(after);
  idle_timer_->async_wait([self = shared_from_this()](const boost::system::error_code& error) {
    if (!error) self->on_idle_timer();
  });
}

void Session::on_idle_timer() {
  if (state_ == State::finished || !idle_timer_) return;
  if (state_ == State::closing) {
    const Clock::duration limit = to_duration(limits().close_timeout);
    const Clock::duration stalled = Clock::now() - last_output_;
    if (stalled < limit) return arm_idle_timer(limit - stalled);
    log::info("dropping {} (session {}): it took none of its last output for {} s", peer_, id_, limits().close_timeout);
    return finish("output not taken", false);
  }
  const Clock::duration limit = to_duration(limits().idle_timeout);
  const Clock::duration idle = Clock::now() - last_input_;
  if (idle < limit) return arm_idle_timer(limit - idle);
  close_with_error(fmt::format("timed out after {} s without input", limits().idle_timeout));
}

}  // namespace netserver
