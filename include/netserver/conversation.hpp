#pragma once
/// Sequential handlers: the protocol of one session written top to bottom as a C++20 coroutine,
/// like Net::Server's process_request reading STDIN line by line -- and still served by the
/// process's one event loop, so one Multiplex process runs thousands of them at once.
///
///   class Echo : public netserver::Conversation {
///     boost::asio::awaitable<void> process_request(netserver::Session& session) override {
///       session.send_line("Welcome");
///       while (auto line = co_await read_line(session)) session.send_line(*line);
///     }
///   };
///
/// A Conversation is a Handler: it sits on the same Session (input buffer, max_line,
/// max_output, idle timeout, backpressure) as callback handlers, and runs under every
/// personality. Input is read from the client only while the coroutine waits in read_line();
/// while it does anything else the session pauses input (what arrived stays pending, bounded by
/// one read, and a client's EOF is held back until the next read_line).

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/awaitable.hpp>

#include "netserver/handler.hpp"
#include "netserver/options.hpp"

namespace netserver {

class Session;

/// A Handler whose protocol is one coroutine per session, process_request (see the top of this
/// file and docs/handlers.md).
class Conversation : public Handler {
 public:
  Conversation();
  ~Conversation() override;

  /// The conversation with one client; runs once per session, on the process's event loop.
  /// Returning ends the session once queued output is sent. An exception ends this session only
  /// (logged, queued output dropped), as a throwing callback does. When the session ends first
  /// (client gone, idle timeout, close(), server stop), a waiting read_line returns nullopt and
  /// any other asio operation the coroutine awaits is cancelled (operation_aborted), so no
  /// coroutine outlives its session. Under Multiplex never block in it: await instead.
  virtual boost::asio::awaitable<void> process_request(Session& session) = 0;

 protected:
  /// The next line from the client, without its line end (LF or CRLF), or nullopt once there is
  /// none: the client finished sending (a last line without line end is still returned first),
  /// or the session is closing or ended. A line longer than max_line ends the session with
  /// "error: line too long", as for LineHandler.
  boost::asio::awaitable<std::optional<std::string>> read_line(Session& session);
  /// read_line that gives up after `wait` (`co_await read_line(session, 30s)`: nullopt, and
  /// timed_out(session) is true; the session stays open and a later read_line gets the line if
  /// it arrives).
  boost::asio::awaitable<std::optional<std::string>> read_line(Session& session, Duration wait);
  /// True when the last read_line on `session` returned nullopt because its timeout expired.
  bool timed_out(const Session& session) const;
  /// Waits until everything queued for the client has been written to the socket (returns at
  /// once when the session has ended).
  boost::asio::awaitable<void> flush(Session& session);
  /// send(bytes), then flush(): a producer of much output waits for a slow client instead of
  /// hitting max_output.
  boost::asio::awaitable<void> write(Session& session, std::string_view bytes);

  // The Handler side, driving the coroutines.
  void on_connect(Session& session) final;
  void on_input(Session& session, Buffer& input) final;
  void on_eof(Session& session) final;
  void on_close(Session& session) final;

 private:
  struct Turn;  // one session's coroutine: its waits, cancellation, input in hand
  Turn* find(const Session& session) const;
  std::shared_ptr<Turn> find_shared(const Session& session) const;
  static void complete_read(Session& session, Turn& turn, std::optional<std::string> line);
  void ended(Session& session, Turn& turn, std::exception_ptr error);
  void take_lines(Session& session, Turn& turn, Buffer& input);
  void wait_for_line(Session& session, boost::asio::any_completion_handler<void(std::optional<std::string>)> handler,
                     Duration wait);

  std::unordered_map<const Session*, std::shared_ptr<Turn>> turns_;
};

}  // namespace netserver
