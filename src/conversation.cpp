#include "netserver/conversation.hpp"

#include <chrono>
#include <cstdint>
#include <utility>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/system_error.hpp>

#include "netserver/log.hpp"
#include "netserver/session.hpp"
#include "session_impl.hpp"

namespace netserver {

namespace asio = boost::asio;
using Line = std::optional<std::string>;

// One session's coroutine as the Handler side sees it. At most one read_line and one flush wait
// at a time; their completion handlers own the suspended coroutine until resumed.
struct Conversation::Turn {
  asio::any_completion_handler<void(Line)> reader;  // a read_line waiting for a line
  asio::any_completion_handler<void()> drained;     // a flush waiting for the output to drain
  Buffer* input = nullptr;     // inside on_input: lines are taken from here without waiting
  bool eof = false;            // the client finished sending and every line was handed over
  bool closed = false;         // on_close ran: the session is over
  bool timed_out = false;      // the last read_line ended by its timeout
  std::unique_ptr<asio::steady_timer> read_timer;  // made on the first read_line with a timeout
  std::uint64_t read_generation = 0;               // tells a stale timer from the current read
  asio::cancellation_signal cancel;                // aborts whatever else the coroutine awaits
};

namespace {

// Takes the handler out of `slot`, leaving it empty. (Boost 1.81's any_completion_handler
// move-assignment recurses forever: swap is the safe way to move one.)
template <class Signature>
asio::any_completion_handler<Signature> take(asio::any_completion_handler<Signature>& slot) {
  asio::any_completion_handler<Signature> taken;
  taken.swap(slot);
  return taken;
}

// The asio "async operation" a coroutine awaits when no line is at hand: its completion handler
// is stored in the Turn and called when a line (or the end) comes. Awaiting an operation object
// rather than a use_awaitable call costs no extra coroutine frame.
template <class Signature, class Start>
struct Suspend {
  Start start;
  template <asio::completion_token_for<Signature> Token>
  auto operator()(Token&& token) {
    return asio::async_initiate<Token, Signature>(
        [start = std::move(start)](auto handler) mutable { start(asio::any_completion_handler<Signature>(std::move(handler))); },
        token);
  }
};

template <class Signature, class Start>
Suspend<Signature, Start> suspend(Start start) {
  return {std::move(start)};
}

}  // namespace

Conversation::Conversation() = default;
Conversation::~Conversation() = default;

Conversation::Turn* Conversation::find(const Session& session) const {
  const auto found = turns_.find(&session);
  return found == turns_.end() ? nullptr : found->second.get();
}

std::shared_ptr<Conversation::Turn> Conversation::find_shared(const Session& session) const {
  const auto found = turns_.find(&session);
  return found == turns_.end() ? nullptr : found->second;
}

// Resumes a waiting read_line. Input pauses first: nothing is read until the coroutine asks again.
void Conversation::complete_read(Session& session, Turn& turn, Line line) {
  session.pause_input();
  ++turn.read_generation;
  if (turn.read_timer) turn.read_timer->cancel();
  take(turn.reader)(std::move(line));
}

bool Conversation::timed_out(const Session& session) const {
  const Turn* turn = find(session);
  return turn && turn->timed_out;
}

// --- the Handler side ------------------------------------------------------------------------

void Conversation::on_connect(Session& session) {
  auto turn = std::make_shared<Turn>();
  turns_[&session] = turn;
  session.pause_input();  // read only while the coroutine waits in read_line
  // The completion handler keeps the Session object (not its connection) and the Turn alive as
  // long as the coroutine: its frame may refer to both until it is gone.
  asio::co_spawn(session.io(), process_request(session),
                 asio::bind_cancellation_slot(turn->cancel.slot(),
                                              [this, self = session.shared_from_this(), turn](std::exception_ptr error) {
                                                ended(*self, *turn, error);
                                              }));
}

void Conversation::on_input(Session& session, Buffer& input) {
  const std::shared_ptr<Turn> turn = find_shared(session);  // the coroutine may end while resumed here
  if (!turn) return;
  if (!turn->reader) return session.pause_input();    // kept pending for the next read_line
  take_lines(session, *turn, input);
}

// Hands lines to the waiting coroutine for as long as it keeps asking; its next read_line takes
// the following line straight from `input` without suspending.
void Conversation::take_lines(Session& session, Turn& turn, Buffer& input) {
  turn.input = &input;
  std::string_view line;
  while (turn.reader && session.is_open()) {
    const LineStatus status = next_line(input, session.limits().max_line, line);
    if (status == LineStatus::too_long) session.close_with_error("line too long");
    if (status != LineStatus::line) break;
    complete_read(session, turn, std::string(line));
  }
  turn.input = nullptr;
  if (input.eof() && input.empty()) turn.eof = true;
}

void Conversation::on_eof(Session& session) {
  Turn* turn = find(session);
  if (!turn) return;
  turn->eof = true;
  if (turn->reader) complete_read(session, *turn, std::nullopt);
}

// The session is over: resume what waits on it, cancel what else the coroutine awaits.
void Conversation::on_close(Session& session) {
  const auto found = turns_.find(&session);
  if (found == turns_.end()) return;
  const std::shared_ptr<Turn> turn = found->second;
  turns_.erase(found);
  turn->closed = true;
  if (turn->reader) complete_read(session, *turn, std::nullopt);
  if (turn->drained) take(turn->drained)();
  turn->read_timer.reset();
  turn->cancel.emit(asio::cancellation_type::terminal);
}

// The coroutine returned or threw.
void Conversation::ended(Session& session, Turn& turn, std::exception_ptr error) {
  auto& engine_session = static_cast<SessionImpl&>(session);  // every Session is the engine's
  if (!error) return engine_session.conversation_ended(turn.eof);
  try {
    std::rethrow_exception(error);
  } catch (const boost::system::system_error& failure) {
    if (turn.closed && failure.code() == asio::error::operation_aborted) return;  // cancelled by on_close
    log::error("handler failed for {} (session {}): {}", session.peer(), session.id(), failure.what());
  } catch (const std::exception& failure) {
    log::error("handler failed for {} (session {}): {}", session.peer(), session.id(), failure.what());
  } catch (...) {
    log::error("handler failed for {} (session {}): unknown exception", session.peer(), session.id());
  }
  engine_session.conversation_failed();
}

// --- what the coroutine awaits ---------------------------------------------------------------

asio::awaitable<Line> Conversation::read_line(Session& session) { return read_line(session, Duration::zero()); }

asio::awaitable<Line> Conversation::read_line(Session& session, Duration wait) {
  Turn* turn = find(session);
  if (!turn || turn->closed) co_return std::nullopt;
  if (turn->reader) throw std::logic_error("read_line: another read_line already waits on this session");
  turn->timed_out = false;
  std::string_view line;
  if (turn->input && session.is_open()) {
    const LineStatus status = next_line(*turn->input, session.limits().max_line, line);
    if (status == LineStatus::line) co_return std::string(line);
    if (status == LineStatus::too_long) session.close_with_error("line too long");
  }
  if (turn->eof || !session.is_open()) co_return std::nullopt;
  co_return co_await suspend<void(Line)>([this, &session, wait](asio::any_completion_handler<void(Line)> handler) {
    wait_for_line(session, std::move(handler), wait);
  });
}

// The coroutine has just suspended in read_line: its handler waits for on_input, on_eof,
// on_close or the timeout. A Turn that is not closed means its Session is still alive.
void Conversation::wait_for_line(Session& session, asio::any_completion_handler<void(Line)> handler, Duration wait) {
  const std::shared_ptr<Turn> turn = find_shared(session);
  turn->reader.swap(handler);
  if (wait > Duration::zero() && wait != forever) {
    if (!turn->read_timer) turn->read_timer = std::make_unique<asio::steady_timer>(session.io());
    turn->read_timer->expires_after(wait);
    turn->read_timer->async_wait([weak = std::weak_ptr<Turn>(turn), &session, generation = turn->read_generation](
                                     const boost::system::error_code& error) {
      const std::shared_ptr<Turn> expired = weak.lock();
      if (error || !expired || expired->closed || expired->read_generation != generation || !expired->reader) return;
      expired->timed_out = true;
      complete_read(session, *expired, std::nullopt);
    });
  }
  session.resume_input();
}

asio::awaitable<void> Conversation::flush(Session& session) {
  Turn* turn = find(session);
  if (!turn || turn->closed || session.queued() == 0) co_return;
  if (turn->drained) throw std::logic_error("flush: another flush already waits on this session");
  co_await suspend<void()>([this, &session](asio::any_completion_handler<void()> handler) {
    const std::shared_ptr<Turn> waiting = find_shared(session);
    waiting->drained.swap(handler);
    session.when_drained([weak = std::weak_ptr<Turn>(waiting)] {
      const std::shared_ptr<Turn> drained = weak.lock();
      if (drained && drained->drained) take(drained->drained)();
    });
  });
}

asio::awaitable<void> Conversation::write(Session& session, std::string_view bytes) {
  session.send(bytes);
  co_await flush(session);
}

}  // namespace netserver
