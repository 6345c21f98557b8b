// A test-only server for the Room API: every byte a client sends is published as it came (no
// line splitting, no escaping) to the room "relay", so a test can see that any byte crosses the
// bus intact. A client hears "joined\n" once it receives the room's messages.

#include <netserver/netserver.hpp>

namespace {

class RelayHandler : public netserver::Handler {
 public:
  void on_connect(netserver::Session& session) override {
    session.room("relay").join(session, session.peer(), [](netserver::Session& joined) { joined.send("joined\n"); });
  }
  void on_input(netserver::Session& session, netserver::Buffer& input) override {
    if (input.empty()) return;
    session.room("relay").publish(input.view(), &session);
    input.consume(input.size());
  }
};

}  // namespace

int main(int argc, char** argv) {
  netserver::Server server("relay", std::make_shared<RelayHandler>());
  server.set_default("personality", std::string("multiplex"));
  return server.main(argc, argv);
}
