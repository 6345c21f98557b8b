#include "session_impl.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <utility>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include "endpoint.hpp"
#include "engine.hpp"
#include "netserver/handler.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"

namespace netserver {

namespace asio = boost::asio;

namespace {

// Queued output this large is written at once instead of waiting for the end of the batch.
constexpr std::size_t eager_flush_bytes = 32 * 1024;

}  // namespace

SessionImpl::SessionImpl(Engine& engine, const Endpoint& endpoint, std::shared_ptr<Transport> transport, std::uint64_t id,
                         std::string peer)
    : Session(id, std::move(peer)),
      engine_(engine),
      endpoint_(endpoint),
      transport_(std::move(transport)),
      input_(engine.limits().max_line + 2),  // room for a longest line and its CRLF
      output_mark_(engine.limits().output_mark()),
      started_(Clock::now()),
      last_input_(started_) {}

SessionImpl::~SessionImpl() = default;

const std::string& SessionImpl::listener() const { return endpoint_.address; }
Server& SessionImpl::server() const { return engine_.server(); }
Registry& SessionImpl::registry() const { return engine_.registry(); }
Room& SessionImpl::room(std::string_view name) const { return engine_.rooms().room(name); }
asio::io_context& SessionImpl::io() const { return engine_.io(); }
const SessionLimits& SessionImpl::limits() const { return engine_.limits(); }
const TlsInfo* SessionImpl::tls() const { return transport_->tls(); }
Handler& SessionImpl::handler() const { return *endpoint_.handler; }

// --- lifecycle -------------------------------------------------------------------------------

void SessionImpl::start() {
  if (phase_ != Phase::admitting) return;
  phase_ = Phase::handshaking;
  transport_->start([self = std::static_pointer_cast<SessionImpl>(shared_from_this())](
                        const boost::system::error_code& error) { self->on_ready(error); });
}

// handshaking -> open: the handler hears of the session. Closed meanwhile (a stop): the flush
// queued by close() ends it.
void SessionImpl::on_ready(const boost::system::error_code& error) {
  if (phase_ != Phase::handshaking) return;
  if (!endpoint_.transport->plaintext()) engine_.count_handshake(!error);
  if (error) return finish(fmt::format("TLS handshake failed: {}", error.message()), false);
  phase_ = Phase::open;
  handler_knows_ = true;
  dispatch(CallbackKind::on_connect, [this] { handler().on_connect(*this); });
  if (phase_ != Phase::open) return;
  if (limits().idle_timeout > Duration::zero()) {
    deadline_ = std::make_unique<asio::steady_timer>(engine_.io());
    arm_deadline(limits().idle_timeout);
  }
  if (early_input_) take_early_input();
  start_read();
}

void SessionImpl::set_early_input(std::string bytes) {
  if (!bytes.empty()) early_input_ = std::make_unique<std::string>(std::move(bytes));
}

// What came with the PROXY header goes the way a read's bytes go (see on_read).
void SessionImpl::take_early_input() {
  const std::unique_ptr<std::string> early = std::move(early_input_);
  bytes_in_ += early->size();
  engine_.count_received(early->size());
  if (deadline_) last_input_ = Clock::now();
  engine_.note_input();
  if (limits().max_input_rate > 0) meter_input(*early);
  deliver(*early, false);
}

// Runs a handler callback: sends made inside it are flushed once it returns; an exception loses
// this session only.
// While it runs, this session is the engine's acting one: the sender of what rooms deliver.
template <class Callback>
void SessionImpl::dispatch(CallbackKind kind, Callback&& callback) {
  if (phase_ == Phase::lingering || phase_ == Phase::finished) return;
  // The stall watcher and the watchdog see which callback of which session holds the loop.
  const ActivitySubject subject(id_, peer_);
  std::optional<CallbackScope> marked;
  if (engine_.watched()) marked.emplace(subject, kind);
  in_callback_ = true;
  SessionImpl* const acting_before = engine_.act(this);
  try {
    callback();
  } catch (const std::exception& error) {
    in_callback_ = false;
    engine_.act(acting_before);
    log::error("handler failed for {} (session {}): {}", peer_, id_, error.what());
    return finish("handler failed", false);
  } catch (...) {
    in_callback_ = false;
    engine_.act(acting_before);
    log::error("handler failed for {} (session {}): unknown exception", peer_, id_);
    return finish("handler failed", false);
  }
  in_callback_ = false;
  engine_.act(acting_before);
  // A session that ended inside the callback kept its input until now: the handler (and the
  // framing that called it) may still have been reading it.
  if (phase_ == Phase::lingering || phase_ == Phase::finished) return input_.pending.clear();
  flush();
}

// open/handshaking -> closing. What is still queued gets close_timeout of no progress at most: a
// client that stops reading cannot keep a closing session (and its descriptor) forever.
void SessionImpl::close() {
  if (phase_ != Phase::open && phase_ != Phase::handshaking) return;
  phase_ = Phase::closing;
  user_timer_.reset();
  if (!in_callback_) flush();  // finishes at once when nothing is queued
  if (phase_ != Phase::closing) return;
  last_output_ = Clock::now();
  if (!deadline_) deadline_ = std::make_unique<asio::steady_timer>(engine_.io());
  arm_deadline(limits().close_timeout);
}

void SessionImpl::close_with_error(std::string_view reason) {
  if (phase_ != Phase::open) return;
  out_.append("error: ").append(reason).append("\r\n");
  if (end_reason_.empty()) end_reason_ = std::string(reason);
  close();
}

void SessionImpl::abort(std::string_view reason) { finish(reason, false); }

void SessionImpl::conversation_ended(bool client_finished) {
  if (client_finished && end_reason_.empty()) end_reason_ = "client closed";
  close();
}

void SessionImpl::refuse() {
  if (phase_ != Phase::admitting) return;
  flush();
  finish("refused", true);
}

// -> lingering or finished: no more reads, writes or callbacks. `graceful` ends the stream
// (half-close, close_notify) and lingers for the client's EOF; otherwise the socket is closed at
// once, dropping unsent output.
void SessionImpl::finish(std::string_view reason, bool graceful) {
  if (phase_ == Phase::lingering || phase_ == Phase::finished) return;
  const bool was_admitted = phase_ != Phase::admitting;
  if (end_reason_.empty()) end_reason_ = std::string(reason);
  deadline_.reset();
  user_timer_.reset();
  soft_timer_.reset();
  stall_timer_.reset();
  rate_timer_.reset();
  release_senders();  // a recipient that ends holds nobody
  if (!in_callback_) input_.pending.clear();  // else dispatch() clears it once the callback returned
  drained_ = nullptr;
  phase_ = Phase::finished;
  if (!graceful) {
    transport_->close();
  } else if (transport_->shutdown(limits().linger, input_.client_done, [&engine = engine_] { engine.linger_ended(); })) {
    phase_ = Phase::lingering;  // the transport ends the linger on its own; the engine counts it
    engine_.linger_started();
  }
  // on_close and the engine's bookkeeping run later: this may be inside another session's
  // broadcast. A refused session was never the engine's to forget.
  if (was_admitted)
    asio::post(engine_.io(), [self = std::static_pointer_cast<SessionImpl>(shared_from_this())] { self->retire(); });
}

void SessionImpl::retire() {
  const ActivitySubject subject(id_, peer_);
  std::optional<CallbackScope> marked;
  if (engine_.watched()) marked.emplace(subject, CallbackKind::on_close);
  try {
    if (handler_knows_) handler().on_close(*this);
  } catch (const std::exception& error) {
    log::error("handler on_close failed for {} (session {}): {}", peer_, id_, error.what());
  }
  engine_.session_ended(*this);
}

// --- input -------------------------------------------------------------------------------------

// Backpressure: a client that does not read our replies stops being read from, and so does one
// whose room deliveries wait on a recipient above the mark, or one past max_input_rate. A closing
// session reads on (and drops the input) to see the client's EOF.
bool SessionImpl::may_read() const {
  return (phase_ == Phase::open || phase_ == Phase::closing) && !input_.reading && !input_.paused && !input_.client_done &&
         input_.holds == 0 && !input_.over_rate && queued() <= limits().max_output / 2;
}

// One read takes at most a quarter of max_output: reading stops above half of it, so the replies
// to one read (as long as they are no larger than it) never take the queue past the limit.
std::size_t SessionImpl::read_budget() const {
  const std::size_t room = input_.pending.room();
  return std::max<std::size_t>(1, std::min(room == 0 ? SIZE_MAX : room, limits().max_output / 4));
}

void SessionImpl::start_read() {
  if (!may_read()) return;
  stop_watching_for_reset();
  input_.reading = true;
  const std::size_t size = std::min(read_budget(), sizeof inbox_);
  transport_->async_read_some({inbox_, size}, [self = std::static_pointer_cast<SessionImpl>(shared_from_this())](
                                                 const boost::system::error_code& error, std::size_t bytes) {
    self->on_read(error, bytes);
  });
}

void SessionImpl::on_read(const boost::system::error_code& error, std::size_t bytes) {
  input_.reading = false;
  if (error == asio::error::operation_aborted || (phase_ != Phase::open && phase_ != Phase::closing)) return;
  if (error == asio::error::eof) return on_client_finished();
  if (error) return finish(error.message(), false);
  bytes_in_ += bytes;
  engine_.count_received(bytes);
  if (deadline_) last_input_ = Clock::now();  // only the idle timeout needs it
  engine_.note_input();
  if (phase_ == Phase::open) {
    std::string_view chunk(inbox_, bytes);
    if (limits().max_input_rate > 0) meter_input(chunk);  // in small reads: one is never much of a burst
    else if (bytes == sizeof inbox_) chunk = read_more(bytes);
    deliver(chunk, false);
    if (input_.client_done) return on_client_finished();
  }
  start_read();
}

// The inbox filled up, so more is probably waiting: continue in the engine's scratch buffer
// (shared by every session of the process) until the socket is drained or the input bound is hit.
std::string_view SessionImpl::read_more(std::size_t already) {
  std::span<char> scratch = engine_.scratch();
  std::memcpy(scratch.data(), inbox_, already);
  const std::size_t limit = std::min(read_budget(), scratch.size());
  std::size_t total = already;
  while (total < limit && !input_.client_done) {
    const std::size_t n = transport_->read_now(scratch.subspan(total, limit - total), input_.client_done);
    if (n == 0) break;
    total += n;
    bytes_in_ += n;
    engine_.count_received(n);
  }
  return {scratch.data(), total};
}

void SessionImpl::deliver(std::string_view chunk, bool eof) {
  bool fits = true;
  dispatch(CallbackKind::on_input, [&] {
    fits = input_.pending.feed(chunk, eof, [this](Buffer& input) {
      if (phase_ == Phase::open) handler().on_input(*this, input);
    });
  });
  // While paused, what is pending may be complete lines the handler takes later; no more is
  // read meanwhile, so it stays bounded by one read.
  if (!fits && !input_.paused) close_with_error("line too long");
}

void SessionImpl::pause_input() {
  input_.paused = true;
  watch_for_reset();
}

// A paused session reads nothing, so a client that resets its connection would go unnoticed
// until the handler reads again (a sequential handler may be asleep for minutes). The reset is
// watched for meanwhile: it ends the session now, as a failed read would, and a Conversation's
// pending awaits end with operation_aborted. A FIN is left to the next read: the client may
// only have finished sending, and what it sent is still to be handled. The watch starts after
// the current callback: a pause undone in the same turn (a read_line after each line) costs no
// system call.
void SessionImpl::watch_for_reset() {
  if (input_.reset_watch != Input::ResetWatch::off || input_.reading || phase_ != Phase::open) return;
  input_.reset_watch = Input::ResetWatch::scheduled;
  asio::post(engine_.io(), [self = std::static_pointer_cast<SessionImpl>(shared_from_this())] { self->arm_reset_watch(); });
}

void SessionImpl::arm_reset_watch() {
  if (input_.reset_watch != Input::ResetWatch::scheduled) return;  // read again meanwhile, or armed already
  if (!input_.paused || input_.reading || phase_ != Phase::open) {
    input_.reset_watch = Input::ResetWatch::off;
    return;
  }
  if (!reset_watch_) reset_watch_ = std::make_unique<asio::cancellation_signal>();
  input_.reset_watch = Input::ResetWatch::armed;
  transport_->async_wait_reset(
      [self = std::static_pointer_cast<SessionImpl>(shared_from_this())](const boost::system::error_code& error) {
        if (error == asio::error::operation_aborted) return;  // cancelled for a read, or closed
        self->input_.reset_watch = Input::ResetWatch::off;
        if (error && !self->input_.reading && (self->phase_ == Phase::open || self->phase_ == Phase::closing))
          self->finish(error.message(), false);
      },
      reset_watch_->slot());
}

void SessionImpl::stop_watching_for_reset() {
  const bool armed = input_.reset_watch == Input::ResetWatch::armed;
  input_.reset_watch = Input::ResetWatch::off;
  if (armed) reset_watch_->emit(asio::cancellation_type::all);
}

// max_input_rate: the lines of each read (one inbox, at most 512 bytes) are taken from the
// session's token bucket; in debt, the client is not read until the debt is paid. Flood control
// slows a client, never disconnects it.
void SessionImpl::meter_input(std::string_view chunk) {
  const auto now = Clock::now();
  if (!input_rate_)
    input_rate_ = std::make_unique<TokenBucket>(limits().max_input_rate, static_cast<double>(limits().max_input_burst), now);
  const auto lines = static_cast<double>(std::count(chunk.begin(), chunk.end(), '\n'));
  const Clock::duration wait = input_rate_->take(lines, now);
  if (wait == Clock::duration::zero()) return;
  input_.over_rate = true;
  if (!rate_timer_) rate_timer_ = std::make_unique<asio::steady_timer>(engine_.io());
  rate_timer_->expires_after(wait);
  rate_timer_->async_wait([self = std::static_pointer_cast<SessionImpl>(shared_from_this())](
                              const boost::system::error_code& error) {
    if (error) return;
    self->input_.over_rate = false;
    self->start_read();
  });
}

void SessionImpl::resume_input() {
  if (!input_.paused) return;
  input_.paused = false;
  // Inside a callback the caller reads on once the callback returns (see on_read); a read
  // started here could land in inbox_ under the input the handler is still working through.
  if (in_callback_ || phase_ != Phase::open) return;
  if (input_.pending.size() == 0 && !input_.client_done) return start_read();
  asio::post(engine_.io(), [self = std::static_pointer_cast<SessionImpl>(shared_from_this())] { self->redeliver(); });
}

// Hands pending input (and an EOF held back while paused) to the handler again.
void SessionImpl::redeliver() {
  if (phase_ != Phase::open || input_.paused) return;
  if (input_.pending.size() > 0) deliver({}, false);
  if (input_.client_done) return on_client_finished();
  start_read();
}

// The client finished sending: the handler gets what it left and on_eof (unless input is paused:
// resume_input() goes on from here), then the session closes once its output is delivered.
void SessionImpl::on_client_finished() {
  input_.client_done = true;
  if (phase_ == Phase::open) {
    if (input_.paused) return;
    if (input_.pending.size() > 0) deliver({}, true);
    dispatch(CallbackKind::on_eof, [this] { handler().on_eof(*this); });
    if (end_reason_.empty()) end_reason_ = "client closed";
    close();
  }
  if (phase_ == Phase::closing && queued() == 0) finish("client closed", true);
}

// --- output ------------------------------------------------------------------------------------

// admitting: queued for a refusal. handshaking: ignored (not one of the clients yet). open:
// queued and written before the loop sleeps (or at once when much is queued). Later: ignored.
void SessionImpl::send(std::string_view bytes) {
  if (bytes.empty()) return;
  if (phase_ == Phase::admitting) return (void)out_.append(bytes);
  if (phase_ != Phase::open) return;
  if (queued() + bytes.size() > limits().max_output) return (void)make_room(bytes);
  out_.append(bytes);
  watch_soft_limit();
  if (waiting_writable_) return;  // the write in flight takes it along
  if (queued() >= eager_flush_bytes) return flush();  // batching only pays for small writes
  if (!in_callback_ && !flush_scheduled_) {
    flush_scheduled_ = true;
    engine_.schedule_flush(std::static_pointer_cast<SessionImpl>(shared_from_this()));
  }
}

// `bytes` would take the queue past max_output. Only what the socket cannot take counts: the
// queue and `bytes` are written now as far as the socket takes them, and only if the rest is still
// past the limit -- the client does not take its output as fast as it comes -- is it disconnected.
bool SessionImpl::make_room(std::string_view bytes) {
  if (!waiting_writable_) {  // else the socket is known to be full
    out_.append(bytes);
    flush();
    if (phase_ != Phase::open) return false;
    if (queued() <= limits().max_output) return watch_soft_limit(), true;
  }
  log::warning("disconnecting {} (session {}): its socket is full and its output queue would pass max_output "
               "({} bytes): the client does not take its output as fast as it comes",
               peer_, id_, limits().max_output);
  finish("output queue full", false);
  return false;
}

// Redis's soft limit: a queue above max_output_soft for max_output_soft_seconds in a row ends the
// session, though it never reached max_output. One timer per episode above the limit; flush()
// ends the episode when the queue drops back.
void SessionImpl::watch_soft_limit() {
  if (above_soft_ || limits().max_output_soft == 0 || queued() <= limits().max_output_soft) return;
  above_soft_ = true;
  above_soft_since_ = Clock::now();
  if (!soft_timer_) soft_timer_ = std::make_unique<asio::steady_timer>(engine_.io());
  soft_timer_->expires_at(above_soft_since_ + limits().max_output_soft_for);
  soft_timer_->async_wait([self = std::static_pointer_cast<SessionImpl>(shared_from_this())](
                              const boost::system::error_code& error) {
    if (!error) self->on_soft_timer();
  });
}

void SessionImpl::on_soft_timer() {
  if (!above_soft_ || phase_ == Phase::lingering || phase_ == Phase::finished) return;
  log::warning("disconnecting {} (session {}): its output queue stayed above max_output_soft ({} bytes) for {} s",
               peer_, id_, limits().max_output_soft, to_seconds(limits().max_output_soft_for));
  finish("output queue full", false);
}

// Writes what is queued without blocking; if the socket is full, waits for it (the one write in
// flight) and gathers everything queued meanwhile into the next write.
void SessionImpl::flush() {
  flush_scheduled_ = false;
  if (phase_ == Phase::lingering || phase_ == Phase::finished || waiting_writable_) return;
  while (out_sent_ < out_.size()) {
    boost::system::error_code error;
    const std::size_t n = transport_->write_now(std::string_view(out_).substr(out_sent_), error);
    if (error) return finish(error.message(), false);
    if (n == 0) {
      if (above_soft_ && queued() <= limits().max_output_soft) above_soft_ = false;
      return wait_writable();
    }
    out_sent_ += n;
    bytes_out_ += n;
    engine_.count_sent(n);
    ++writes_;
    if (phase_ == Phase::closing) last_output_ = Clock::now();  // only the close deadline needs it
    if (stall_watch_) {
      last_taken_ = Clock::now();  // only the stall watch needs it
      if (queued() <= output_mark_) release_senders();
    }
  }
  drained();
}

// Everything queued was written.
void SessionImpl::drained() {
  out_.clear();
  out_sent_ = 0;
  above_soft_ = false;
  if (stall_watch_) release_senders();
  if (out_.capacity() > 64 * 1024) std::string().swap(out_);
  if (drained_) asio::post(engine_.io(), std::exchange(drained_, nullptr));
  if (phase_ == Phase::closing) return finish(end_reason_.empty() ? "server closed" : end_reason_, true);
  // Resumes a read paused for backpressure -- but not from inside a handler: a read may land in
  // inbox_ at once, under the input the handler is still working through.
  if (!in_callback_) start_read();
}

void SessionImpl::wait_writable() {
  waiting_writable_ = true;
  if (out_sent_ > 64 * 1024 && out_sent_ > out_.size() / 2) {
    out_.erase(0, out_sent_);
    out_sent_ = 0;
  }
  transport_->async_wait_writable([self = std::static_pointer_cast<SessionImpl>(shared_from_this())](
                                      const boost::system::error_code& error) {
    self->waiting_writable_ = false;
    if (error == asio::error::operation_aborted) return;
    if (error) return self->finish(error.message(), false);
    self->flush();
  });
}

void SessionImpl::when_drained(std::function<void()> callback) {
  if (phase_ == Phase::lingering || phase_ == Phase::finished) return;
  if (queued() == 0) return asio::post(engine_.io(), std::move(callback));
  drained_ = std::move(callback);
}

// --- fan-out ---------------------------------------------------------------------------------------

// A room delivery left the queue above the mark. Only what the socket does not take counts (a
// queue waiting for the end-of-batch flush is written first).
void SessionImpl::above_mark(SessionImpl* sender) {
  if (phase_ != Phase::open) return;
  if (!waiting_writable_) flush();
  if (queued() <= output_mark_ || phase_ != Phase::open) return;
  if (SessionImpl* acting = engine_.acting()) sender = acting;
  watch_stall();
  if (sender != nullptr && sender != this) hold(*sender);  // its own queue holds a session already
}

void SessionImpl::hold(SessionImpl& sender) {
  if (sender.phase_ != Phase::open && sender.phase_ != Phase::closing) return;
  for (const auto& held : holding_)
    if (held.first == sender.id_) return;
  holding_.emplace_back(sender.id_, std::static_pointer_cast<SessionImpl>(sender.shared_from_this()));
  sender.hold_input();
}

// The queue dropped back below the mark, or the session ends: the episode is over and every
// sender it held may be read again.
void SessionImpl::release_senders() {
  stall_watch_ = false;
  if (holding_.empty()) return;
  auto held = std::move(holding_);
  holding_.clear();
  for (auto& [id, weak] : held)
    if (auto sender = weak.lock()) sender->unheld();
}

// Reads again once no recipient holds it -- but not from inside its own callback (the read at the
// end of on_read, or the flush after it, goes on from there).
void SessionImpl::unheld() {
  if (input_.holds == 0 || --input_.holds > 0 || in_callback_) return;
  start_read();
}

// Starts an episode above the mark: the stall clock runs from now and every byte the client
// takes sets it back. One timer; it sleeps again for the remainder when the client took bytes.
void SessionImpl::watch_stall() {
  if (stall_watch_) return;
  stall_watch_ = true;
  last_taken_ = Clock::now();
  const Duration limit = limits().output_stall_timeout;
  if (limit <= Duration::zero() || limit == forever || stall_timer_armed_) return;
  if (!stall_timer_) stall_timer_ = std::make_unique<asio::steady_timer>(engine_.io());
  arm_stall_timer(limit);
}

void SessionImpl::arm_stall_timer(Clock::duration after) {
  stall_timer_armed_ = true;
  stall_timer_->expires_after(after);
  stall_timer_->async_wait([self = std::static_pointer_cast<SessionImpl>(shared_from_this())](
                               const boost::system::error_code& error) {
    self->stall_timer_armed_ = false;
    if (!error) self->on_stall_timer();
  });
}

void SessionImpl::on_stall_timer() {
  if (!stall_watch_ || phase_ != Phase::open) return;
  const Clock::duration limit = limits().output_stall_timeout;
  const Clock::duration stalled = Clock::now() - last_taken_;
  if (stalled < limit) return arm_stall_timer(limit - stalled);
  log::warning("disconnecting {} (session {}): its output queue is above room_output_mark ({} bytes) and it took "
               "none of it for {} s (output_stall_timeout); {} sender(s) waited on it",
               peer_, id_, limits().output_mark(), to_seconds(limits().output_stall_timeout), holding_.size());
  finish("output stalled", false);
}

// --- timers ------------------------------------------------------------------------------------

void SessionImpl::set_timeout(Duration after) {
  if (phase_ != Phase::open) return;
  const std::uint64_t generation = ++user_timer_generation_;
  if (after <= Duration::zero()) {
    user_timer_.reset();
    return;
  }
  if (!user_timer_) user_timer_ = std::make_unique<asio::steady_timer>(engine_.io());
  user_timer_->expires_after(after);
  user_timer_->async_wait([self = std::static_pointer_cast<SessionImpl>(shared_from_this()), generation](
                              const boost::system::error_code& error) {
    if (error || generation != self->user_timer_generation_ || self->phase_ != Phase::open) return;
    self->dispatch(CallbackKind::on_timeout, [&] { self->handler().on_timeout(*self); });
  });
}

// One timer bounds both waits: an open session's wait for input (timeout) and a closing
// session's wait for its client to take the output (close_timeout). It is not re-armed on every
// read or write: when it fires it checks the time of the last progress and sleeps again for the
// remainder.
void SessionImpl::arm_deadline(Clock::duration after) {
  deadline_->expires_after(after);
  deadline_->async_wait([self = std::static_pointer_cast<SessionImpl>(shared_from_this())](
                            const boost::system::error_code& error) {
    if (!error) self->on_deadline();
  });
}

void SessionImpl::on_deadline() {
  if (!deadline_) return;
  if (phase_ == Phase::closing) {
    const Clock::duration limit = limits().close_timeout;
    const Clock::duration stalled = Clock::now() - last_output_;
    if (stalled < limit) return arm_deadline(limit - stalled);
    log::info("dropping {} (session {}): it took none of its last output for {} s", peer_, id_,
              to_seconds(limits().close_timeout));
    return finish("output not taken", false);
  }
  if (phase_ != Phase::open) return;
  const Clock::duration limit = limits().idle_timeout;
  const Clock::duration idle = Clock::now() - last_input_;
  if (idle < limit) return arm_deadline(limit - idle);
  close_with_error(fmt::format("timed out after {} s without input", to_seconds(limits().idle_timeout)));
}

}  // namespace netserver
