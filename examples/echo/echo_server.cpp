// The echo demo: a banner naming the personality and the serving process, then every line back
// verbatim. `quit` or `bye` ends the session. Runs unchanged under every personality.

#include <unistd.h>

#include <netserver/netserver.hpp>

class EchoHandler : public netserver::LineHandler {
 public:
  void on_connect(netserver::Session& session) override {
    const netserver::TlsInfo* tls = session.tls();
    session.send_line(fmt::format("Welcome to \"echo\" (personality {}, pid {}{}{})", session.server().personality_name(),
                                  ::getpid(), tls ? ", tls " : "", tls ? tls->version : ""));
  }

  void on_line(netserver::Session& session, std::string_view line) override {
    if (line == "quit" || line == "bye") return session.close();
    session.send_line(line);
  }
};

int main(int argc, char** argv) {
  netserver::Server server("echo", std::make_shared<EchoHandler>());
  return server.main(argc, argv);
}
