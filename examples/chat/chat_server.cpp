// The chat demo: the protocol of the Net::Server::Multiplex chat tutorial, line for line, plus
// /who, /nick and /help. Every client joins the room "chat" and speaks to it. Without a bus the
// room is the clients *of this process*: everyone under Multiplex, nobody under Single or PreFork,
// where a process holds only one client. With `bus: redis://...` the same room spans every
// process of every personality sharing the Redis; this file does not change.

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
    // Announced once the session hears the room (at once without a bus).
    room(session).join(session, name(session), [](Session& joined) {
      tell_others(joined, fmt::format("Please welcome {}, who just joined us", name(joined)));
    });
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

  static netserver::Room& room(Session& session) { return session.room("chat"); }

  static void tell_others(Session& session, const std::string& text) {
    room(session).publish(text + std::string(crlf), &session);
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
    session.send_line(room(session).spans_processes()
                          ? "  /who         who is in this chat room (the clients of every process on the bus)"
                          : "  /who         who is in this chat room (the clients of this server process)");
    session.send_line("  /nick NAME   be called NAME instead of your address");
    session.send_line("  /help        this list");
    session.send_line("Any other line is sent to everyone else; \"bye\" says goodbye and leaves.");
  }

  // Without a bus: this process's clients. With one: everyone in the room, with the pid and host
  // serving each (the answer comes from Redis, so it may arrive after later input's replies).
  static void who(Session& session) {
    const bool everywhere = room(session).spans_processes();
    room(session).who(session, [everywhere](Session& asking, std::vector<netserver::Member> members) {
      if (everywhere) {
        std::vector<std::pair<std::string, pid_t>> processes;
        for (const auto& m : members) processes.emplace_back(m.host, m.pid);
        std::sort(processes.begin(), processes.end());
        processes.erase(std::unique(processes.begin(), processes.end()), processes.end());
        asking.send_line(fmt::format("{} client(s) in room chat, served by {} process(es):", members.size(), processes.size()));
      } else {
        asking.send_line(fmt::format("{} client(s) in this process (pid {}, personality {}):", members.size(), ::getpid(),
                                     asking.server().personality_name()));
      }
      for (const auto& m : members) {
        const std::string address = m.label == m.peer ? "" : " (" + m.peer + ")";
        const std::string where = everywhere ? fmt::format(" [pid {} on {}]", m.pid, m.host) : "";
        asking.send_line(fmt::format("  {}{}{}{}", m.label, address, where, m.session == &asking ? " <- you" : ""));
      }
    });
  }

  static void nick(Session& session, std::string_view wanted) {
    const bool valid = !wanted.empty() && wanted.size() <= max_nick &&
                       std::none_of(wanted.begin(), wanted.end(), [](char c) { return c == ' ' || c < 33 || c == 127; });
    if (!valid) return session.send_line(fmt::format("Usage: /nick NAME (1 to {} characters, no spaces)", max_nick));
    const std::string before = name(session);
    session.state<ChatUser>().nick = std::string(wanted);
    room(session).relabel(session, std::string(wanted));
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
