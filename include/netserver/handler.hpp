#pragma once
/// The protocol: what a server says and does, written once and run unchanged under every
/// personality. One Handler object serves all sessions of a process; per-session state lives in
/// Session::state<T>().

#include <string_view>

#include "netserver/buffer.hpp"

namespace netserver {

class Session;

/// Protocol callbacks. Every callback runs on the process's event loop: under Multiplex it must
/// return quickly (every other client waits meanwhile); under Single and PreFork a callback may
/// block, since its process serves nobody else. A callback that throws loses its own session
/// (logged), never the server.
class Handler {
 public:
  virtual ~Handler() = default;
  /// A client was accepted and allowed (after post_accept_hook and allow_deny).
  virtual void on_connect(Session&) {}
  /// Bytes arrived. Consume from the left what you handled; the rest comes back later with more
  /// bytes after it. Leaving max_line + 2 bytes or more unconsumed ends the session with
  /// "error: line too long". On the last call `input.eof()` is true.
  virtual void on_input(Session& session, Buffer& input) = 0;
  /// The client finished sending (after a last on_input with whatever it left). The session
  /// closes once queued output is flushed.
  virtual void on_eof(Session&) {}
  /// The timer set by Session::set_timeout expired.
  virtual void on_timeout(Session&) {}
  /// The session has ended; sending is no longer possible.
  virtual void on_close(Session&) {}
};

/// A Handler for line protocols: input is split at LF (a CR before it is dropped) and each line
/// is handed to on_line without its line end. A line longer than max_line bytes ends the session
/// with "error: line too long"; a last line without line end is still delivered at EOF.
class LineHandler : public Handler {
 public:
  void on_input(Session& session, Buffer& input) final;
  /// One line of input, without its line end. Valid only during the call.
  virtual void on_line(Session& session, std::string_view line) = 0;
};

}  // namespace netserver
