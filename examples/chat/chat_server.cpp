// The chat demo: the protocol of the Net::Server::Multiplex chat tutorial, line for line, plus
// /who, /nick and /help. Every client joins the room "chat" and speaks to it. Without a bus the
// room is the clients *of this process*: everyone under Multiplex, nobody under Single or PreFork,
// where a process holds only one client. With `bus: redis://...` the same room spans every
// process of every personality sharing the Redis; this file does not change. The text rules
// (commands, allowed nicks, escaping what a client typed) live in chat_protocol.*.

#include <unistd.h>

#include <algorithm>
#include <optional>
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
    members_.add(1);
    session.send_line("Welcome, to the server!");
    const netserver::TlsInfo* tls = session.tls();
    session.send_line(fmt::format("You are served by \"chat\" (personality {}, pid {}{}{}); /help lists the commands",
                                  session.server().personality_name(), ::getpid(), tls ? ", tls " : "",
                                  tls ? tls->version : ""));
    // What comes through the bus is checked again by this chat's rules: any program that can
    // reach Redis can publish to the room (bus_secret keeps out those without the key).
    room(session).receive_filter(&chat::relayed_line);
    // Announced once the session hears the room (at once without a bus).
    room(session).join(session, name(session), [](Session& joined) {
      tell_others(joined, fmt::format("Please welcome {}, who just joined us", name(joined)));
    });
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
    members_.add(-1);
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

  // What a client typed reaches the others with its control characters escaped: a CR or an
  // ANSI escape could otherwise forge a line from someone else on their terminals.
  void say(Session& session, std::string_view line) {
    relayed_.add();
    tell_others(session, fmt::format("Client {} said: {}", name(session), chat::escape_controls(line)));
    if (line == "bye") session.close();
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
      // Entries from Redis are input: one whose label no member could have is not listed (only
      // counted), and addresses and hosts are shown escaped.
      const std::size_t all = members.size();
      std::erase_if(members, [](const netserver::Member& m) { return !chat::is_member_label(m.label); });
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
        const std::string address = m.label == m.peer ? "" : " (" + chat::escape_controls(m.peer) + ")";
        const std::string where = everywhere ? fmt::format(" [pid {} on {}]", m.pid, chat::escape_controls(m.host)) : "";
        asking.send_line(fmt::format("  {}{}{}{}", m.label, address, where, m.session == &asking ? " <- you" : ""));
      }
      if (all > members.size())
        asking.send_line(fmt::format("({} entry(ies) of the room's presence list with an invalid name not shown)", all - members.size()));
    });
  }

  // The nick is claimed in the room: unique among everyone in it, in every process on the bus
  // (the answer then comes from Redis, so it may arrive after later input's replies).
  static void nick(Session& session, std::string_view wanted) {
    if (const auto problem = chat::nick_problem(wanted))
      return session.send_line(fmt::format("Usage: /nick NAME ({})", *problem));
    room(session).claim(session, std::string(wanted), chat::nick_key(wanted),
                        [wanted = std::string(wanted)](Session& asking, const netserver::ClaimOutcome& outcome) {
                          using Kind = netserver::ClaimOutcome::Kind;
                          if (outcome.kind == Kind::refused)
                            return asking.send_line(fmt::format(
                                "The nick {} cannot be claimed now: the room's name registry refused it; try again later", wanted));
                          if (outcome.kind == Kind::taken)  // the holder as it is called, if that is a valid name
                            return asking.send_line(fmt::format(
                                "The nick {} is taken", chat::is_member_label(outcome.holder) ? outcome.holder : wanted));
                          const std::string before = name(asking);
                          asking.state<ChatUser>().nick = wanted;
                          asking.send_line(fmt::format("You are now known as {}", wanted));
                          tell_others(asking, fmt::format("{} is now known as {}", before, wanted));
                        });
  }

  // On the status listener's /metrics (status.listen), summed over the server's processes.
  const netserver::Counter relayed_ =
      netserver::register_counter("chat_messages_relayed_total", "chat lines passed on to the room");
  const netserver::Gauge members_ =
      netserver::register_gauge("chat_room_members", "clients in a chat room", {{"room", "chat"}});
};

}  // namespace

int main(int argc, char** argv) {
  netserver::Server server("chat", std::make_shared<ChatHandler>());
  server.set_default("personality", std::string("multiplex"));
  return server.main(argc, argv);
}
