// A counter server: every client gets a banner, then each line back in capitals with its number.
#include <cctype>
#include <string>

#include <netserver/netserver.hpp>

class ShoutHandler : public netserver::LineHandler {
 public:
  void on_connect(netserver::Session& session) override {
    session.send_line("Hello! Type something; 'bye' ends the session.");
  }

  void on_line(netserver::Session& session, std::string_view line) override {
    if (line == "bye") return session.close();
    int& count = session.state<int>();  // per-client state, starts at 0
    std::string loud(line);
    for (char& c : loud) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    session.send_line(fmt::format("{}: {}", ++count, loud));
  }
};

int main(int argc, char** argv) {
  netserver::Server server("shout", std::make_shared<ShoutHandler>());
  server.set_default("port", std::int64_t{9000});  // the config file and command line still win
  return server.main(argc, argv);
}
