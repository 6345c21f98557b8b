// sequential_relay: a test-only chat relay written as a Conversation (issue 26): every line a
// client sends reaches the others in the room "chat" as "Client PEER said: LINE", published from
// inside the coroutine -- so the room's backpressure on a flooding sender is seen to hold a
// sequential handler as it holds a callback one.

#include <unistd.h>

#include <netserver/netserver.hpp>

namespace {

class Relay : public netserver::Conversation {
 public:
  boost::asio::awaitable<void> process_request(netserver::Session& session) override {
    netserver::Room& room = session.room("chat");
    room.join(session, session.peer());
    session.send_line(fmt::format("You are served by the sequential relay (personality {}, pid {})",
                                  session.server().personality_name(), ::getpid()));
    while (auto line = co_await read_line(session)) room.publish(fmt::format("Client {} said: {}\r\n", session.peer(), *line), &session);
  }
};

}  // namespace

int main(int argc, char** argv) {
  netserver::Server server("sequential_relay", std::make_shared<Relay>());
  server.set_default("personality", std::string("multiplex"));
  return server.main(argc, argv);
}
