// sequential_probe: a test-only server written as a Conversation, whose line commands reach every
// corner of the sequential API (timed reads, flush, foreign timers, exceptions, broadcasts) and
// which logs when a conversation's coroutine frame is destroyed.

#include <unistd.h>

#include <chrono>
#include <stdexcept>

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <netserver/netserver.hpp>

#include "probe_command.hpp"

using netserver::Session;
using probe::number;

namespace {

// Lives in the coroutine frame: its destructor runs when the frame is destroyed, however it ends.
struct FrameWatch {
  std::uint64_t id;
  ~FrameWatch() { netserver::log::notice("conversation of session {} freed", id); }
};

class Probe : public netserver::Conversation {
 public:
  boost::asio::awaitable<void> process_request(Session& session) override {
    const FrameWatch watch{session.id()};
    session.send_line(fmt::format("sequential probe ready (personality {}, pid {})",
                                  session.server().personality_name(), ::getpid()));
    while (auto line = co_await read_line(session)) {
      const auto [command, argument] = probe::parse(*line);
      if (command == "quit") co_return;
      if (command == "echo") session.send_line(argument);
      else if (command == "throw") {
        session.send_line("throwing");
        throw std::runtime_error("probe exception");
      } else if (command == "sleep") co_await sleep(session, number(argument));
      else if (command == "read") co_await timed_read(session, number(argument));
      else if (command == "flood") co_await flood(session, static_cast<std::size_t>(number(argument)));
      else if (command == "say") session.registry().broadcast(std::string(argument) + "\r\n", &session);
      else if (command == "close") session.close();
      else session.send_line("unknown command");
    }
    session.send_line("no more input");
  }

 private:
  // An asio operation the Conversation knows nothing of: cancelled when the session ends.
  static boost::asio::awaitable<void> sleep(Session& session, double seconds) {
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor);
    timer.expires_after(netserver::from_seconds(seconds));
    co_await timer.async_wait(boost::asio::use_awaitable);
    session.send_line("slept");
  }

  boost::asio::awaitable<void> timed_read(Session& session, double seconds) {
    const auto line = co_await read_line(session, netserver::from_seconds(seconds));
    if (line) session.send_line("got " + *line);
    else if (timed_out(session)) session.send_line("timed out");
  }

  // Queues `bytes` in 1000-byte lines, waiting for each 64K to drain: never near max_output.
  boost::asio::awaitable<void> flood(Session& session, std::size_t bytes) {
    const std::string line(998, 'f');
    for (std::size_t sent = 0; sent < bytes && session.is_open(); sent += 1000) {
      session.send_line(line);
      if (session.queued() >= 64 * 1024) co_await flush(session);
    }
    co_await flush(session);
    session.send_line(fmt::format("flushed {}", session.queued()));
  }
};

}  // namespace

int main(int argc, char** argv) {
  netserver::Server server("sequential_probe", std::make_shared<Probe>());
  return server.main(argc, argv);
}
