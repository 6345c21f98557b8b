// The chat demo: the protocol of the Net::Server::Multiplex chat tutorial, line for line, plus
// /who, /nick and /help. A message reaches the other clients *of this process*: everyone under
// Multiplex, nobody under Single or PreFork, where a process holds only one client. The text rules
// (commands, allowed nicks, escaping what a client typed) live in chat_protocol.*.

#include <unistd.h>

#include <algorithm>
#include <vector>

#include <netserver/netserver.hpp>

#include "chat_protocol.hpp"

using netserver::Session;

namespace {

constexpr std::string_view crlf = "\r\n";

struct ChatUser {
  std::string nick;  // empty: known by HOST:PORT
};

class ChatHandler : public netserver::LineHandler {
 public:
  void on_connect(Session& session) override {
    session.send_line("Welcome, to the server!");
    const netserver::TlsInfo* tls = session.tls();
    session.send_line(fmt::format("You are served by \"chat\" (personality {}, pid {}{}{}); /help lists the commands",
                                  session.server().personality_name(), ::getpid(), tls ? ", tls " : "",
                                  tls ? tls->version : ""));
    tell_others(session, fmt::format("Please welcome {}, who just joined us", name(session)));
  }

  void on_line(Session& session, std::string_view line) override {
    const chat::Command command = chat::parse_line(line);
    switch (command.kind) {
      case chat::Command::Kind::none: return;
      case chat::Command::Kind::message: return say(session, line);
      case chat::Command::Kind::who: return who(session);
      case chat::Command::Kind::nick: return nick(session, command.argument);
      case chat::Command::Kind::help: return help(session);
      case chat::Command::Kind::unknown:
        return session.send_line(fmt::format("Unknown command {}; /help lists the commands",
                                             chat::escape_controls(command.verb)));
    }
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

  // What a client typed reaches the others with its control characters escaped: a CR or an
  // ANSI escape could otherwise forge a line from someone else on their terminals.
  static void say(Session& session, std::string_view line) {
    tell_others(session, fmt::format("Client {} said: {}", name(session), chat::escape_controls(line)));
    if (line == "bye") session.close();
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
    if (const auto problem = chat::nick_problem(wanted))
      return session.send_line(fmt::format("Usage: /nick NAME ({})", *problem));
    if (Session* holder = nick_holder(session, wanted); holder && holder != &session)
      return session.send_line(fmt::format("The nick {} is taken", name(*holder)));
    const std::string before = name(session);
    session.state<ChatUser>().nick = std::string(wanted);
    session.send_line(fmt::format("You are now known as {}", wanted));
    tell_others(session, fmt::format("{} is now known as {}", before, wanted));
  }

  // The session in this room already called `wanted` (ignoring ASCII case), if any.
  static Session* nick_holder(Session& session, std::string_view wanted) {
    Session* holder = nullptr;
    session.registry().for_each([&](Session& other) {
      if (chat::same_nick(other.state<ChatUser>().nick, wanted)) holder = &other;
    });
    return holder;
  }
};

}  // namespace

int main(int argc, char** argv) {
  netserver::Server server("chat", std::make_shared<ChatHandler>());
  server.set_default("personality", std::string("multiplex"));
  return server.main(argc, argv);
}
