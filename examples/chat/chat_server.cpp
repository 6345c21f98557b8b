// The chat demo: the protocol of the Net::Server::Multiplex chat tutorial, line for line, plus
// /who, /nick and /help. A message reaches the other clients *of this process*: everyone under
// Multiplex, nobody under Single or PreFork, where a process holds only one client.

#include <unistd.h>

#include <algorithm>
#include <vector>

#include <netserver/netserver.hpp>

using netserver::Session;

namespace {

constexpr std::string_view crlf = "\r\n";
constexpr std::size_t max_nick = 32;

struct ChatUser {
  std::string nick;  // empty: known by HOST:PORT
};

class ChatHandler : public netserver::LineHandler {
 public:
  void on_connect(Session& session) override {
    session.send_line("Welcome, to the server!");
    session.send_line(fmt::format("You are served by \"chat\" (personality {}, pid {}); /help lists the commands",
                                  session.server().personality_name(), ::getpid()));
    tell_others(session, fmt::format("Please welcome {}, who just joined us", name(session)));
  }

  void on_line(Session& session, std::string_view line) override {
    if (line.empty()) return;
    if (line.starts_with('/')) return command(session, line);
    tell_others(session, fmt::format("Client {} said: {}", name(session), line));
    if (line == "bye") session.close();
  }

  void on_close(Session& session) override {
    tell_others(session, fmt::format("Unfortunately {} left us", name(session)));
  }

 private:
  static std::string name(Session& session) {
    const ChatUser& user = session.state<ChatUser>();
    return user.nick.empty() ? session.peer() : user.nick;
  }

  static void tell_others(Session& session, const std::string& text) {
    session.registry().broadcast(text + std::string(crlf), &session);
  }

  void command(Session& session, std::string_view line) {
    const std::size_t space = line.find(' ');
    const std::string_view verb = line.substr(0, space);
    const std::string_view argument = space == std::string_view::npos ? "" : netserver::trim(line.substr(space + 1));
    if (verb == "/who") return who(session);
    if (verb == "/nick") return nick(session, argument);
    if (verb == "/help") return help(session);
    session.send_line(fmt::format("Unknown command {}; /help lists the commands", verb));
  }

  static void help(Session& session) {
    session.send_line("Commands:");
    session.send_line("  /who         who is in this chat room (the clients of this server process)");
    session.send_line("  /nick NAME   be called NAME instead of your address");
    session.send_line("  /help        this list");
    session.send_line("Any other line is sent to everyone else; \"bye\" says goodbye and leaves.");
  }

  static void who(Session& session) {
    std::vector<Session*> here;
    session.registry().for_each([&](Session& other) { here.push_back(&other); });
    std::sort(here.begin(), here.end(), [](Session* a, Session* b) { return a->id() < b->id(); });
    session.send_line(fmt::format("{} client(s) in this process (pid {}, personality {}):", here.size(), ::getpid(),
                                  session.server().personality_name()));
    for (Session* other : here) {
      const std::string label = name(*other);
      const std::string address = label == other->peer() ? "" : " (" + other->peer() + ")";
      session.send_line(fmt::format("  {}{}{}", label, address, other == &session ? " <- you" : ""));
    }
  }

  static void nick(Session& session, std::string_view wanted) {
    const bool valid = !wanted.empty() && wanted.size() <= max_nick &&
                       std::none_of(wanted.begin(), wanted.end(), [](char c) { return c == ' ' || c < 33 || c == 127; });
    if (!valid) return session.send_line(fmt::format("Usage: /nick NAME (1 to {} characters, no spaces)", max_nick));
    const std::string before = name(session);
    session.state<ChatUser>().nick = std::string(wanted);
    session.send_line(fmt::format("You are now known as {}", wanted));
    tell_others(session, fmt::format("{} is now known as {}", before, wanted));
  }
};

}  // namespace

int main(int argc, char** argv) {
  netserver::Server server("chat", std::make_shared<ChatHandler>());
  server.set_default("personality", std::string("multiplex"));
  return server.main(argc, argv);
}
