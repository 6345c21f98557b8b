// The echo demo: a banner naming the personality and the serving process, then every line back
// verbatim. `quit` or `bye` ends the session. Runs unchanged under every personality, written
// either way a protocol can be written (`style: callbacks`, the default, or `style: sequential`):
// both send the same bytes.

#include <unistd.h>

#include <netserver/netserver.hpp>

namespace {

std::string banner(const netserver::Session& session) {
  const netserver::TlsInfo* tls = session.tls();
  return fmt::format("Welcome to \"echo\" (personality {}, pid {}{}{})", session.server().personality_name(), ::getpid(),
                     tls ? ", tls " : "", tls ? tls->version : "");
}

// Callbacks: the event loop hands over each line.
class EchoHandler : public netserver::LineHandler {
 public:
  void on_connect(netserver::Session& session) override { session.send_line(banner(session)); }

  void on_line(netserver::Session& session, std::string_view line) override {
    if (line == "quit" || line == "bye") return session.close();
    session.send_line(line);
  }
};

// Sequential: the conversation asks for each line (a coroutine on the same event loop).
class EchoConversation : public netserver::Conversation {
 public:
  boost::asio::awaitable<void> process_request(netserver::Session& session) override {
    session.send_line(banner(session));
    while (auto line = co_await read_line(session)) {
      if (*line == "quit" || *line == "bye") co_return;
      session.send_line(*line);
    }
  }
};

class EchoServer : public netserver::Server {
 public:
  EchoServer() : Server("echo", std::make_shared<EchoHandler>()) {
    options().add(netserver::Option::text("style", "callbacks", "how the protocol is written: callbacks or sequential")
                      .with_choices({"callbacks", "sequential"}));
  }

  void post_configure_hook() override {
    if (config().string("style") == "sequential") set_handler(std::make_shared<EchoConversation>());
  }
};

}  // namespace

int main(int argc, char** argv) {
  EchoServer server;
  return server.main(argc, argv);
}
