#pragma once
/// ChildRuntime: how every supervised child starts and ends -- a PreFork child, a Multiplex
/// worker, a Fork child -- written once. In the new child, right after fork (Supervisor::spawn):
///
///   1. signals: every disposition back to its default, SIGPIPE ignored, the signals this kind of
///      child leaves to the parent ignored, and those it handles itself blocked until its loop's
///      SignalWatcher takes them (none is lost in between); everything else unblocked;
///   2. child_init_hook (a child whose hook throws exits with status 3: it cannot start);
///   3. the child's own main, given a ParentLink: its channel to the parent, on its event loop
///      (reports, orders, and the channel's end, which means the parent is gone);
///   4. child_finish_hook, for every child whose child_init_hook returned; then _exit.

#include <functional>
#include <initializer_list>
#include <memory>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

namespace netserver {

class Server;

/// What a child tells its parent, and the parent a child, over their channel: one byte each.
namespace child_report {
constexpr char idle = 'i';    ///< ready for a client (a worker: accepting)
constexpr char busy = 'b';    ///< serving a client (PreFork)
constexpr char retire = 'r';  ///< parent to child: leave once idle
constexpr char leaving = 'l';  ///< child to parent: it leaves on its own (max_requests) and drains: replace it now
}  // namespace child_report

/// How a kind of child takes signals.
struct ChildSignals {
  std::vector<int> handled;  ///< taken by the child's SignalWatcher (blocked until then)
  std::vector<int> ignored;  ///< the parent's business
};

/// The child's end of its channel to the parent, on the child's event loop.
class ParentLink {
 public:
  ParentLink(boost::asio::io_context& io, int channel);
  ~ParentLink();
  ParentLink(const ParentLink&) = delete;
  ParentLink& operator=(const ParentLink&) = delete;

  /// Tells the parent something (a child_report byte); a parent already gone is not an error.
  void report(char what);
  /// Starts watching: `order` for every byte the parent sends, `gone` once when the channel
  /// ends (the parent exited, was killed, or exec'd a new image on HUP).
  void watch(std::function<void(char)> order, std::function<void()> gone);
  /// True once the channel ended.
  bool parent_gone() const { return gone_seen_; }

 private:
  void read();
  boost::asio::posix::stream_descriptor channel_;
  std::function<void(char)> order_;
  std::function<void()> gone_;
  bool gone_seen_ = false;
  char bytes_[16];
};

/// Runs a new child: steps 1-4 above around `main(channel)`, whose return value is the exit
/// status. Never returns.
[[noreturn]] void run_child(Server& server, int channel, const ChildSignals& signals, const std::function<int(int)>& main);

}  // namespace netserver
