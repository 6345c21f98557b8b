// The chat demo against the real chat_server: the tutorial's lines in order, /who and /nick,
// slow readers, a thousand clients, limits, TERM, and why it needs Multiplex.

#include <catch2/catch.hpp>

#include <csignal>
#include <regex>
#include <thread>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;
using Catch::Matchers::EndsWith;
using Catch::Matchers::StartsWith;

namespace {

const std::string yaml = "host: 127.0.0.1\nport: 0\nlog_level: 3\n";

struct Member {
  Client client;
  std::string name;  // HOST:PORT as the others see it
};

// Connects and reads the two greeting lines.
Member join(const ServerProcess& server) {
  Client client(server.port());
  const auto welcome = client.read_line();
  REQUIRE(welcome == "Welcome, to the server!");
  const auto info = client.read_line();
  REQUIRE(info);
  REQUIRE_THAT(*info, StartsWith("You are served by \"chat\" (personality "));
  const std::string name = "127.0.0.1:" + std::to_string(client.local_port());
  return Member{std::move(client), name};
}

// The writes the server made to `member` over its whole session, from the "closed" log line
// (logged once the member has left).
long writes_to(const ServerProcess& server, Member& member) {
  member.client.close();
  REQUIRE(server.wait_for_log("closed " + member.name + " "));
  std::smatch match;
  const std::string log = server.log();
  const std::regex closed("closed " + std::regex_replace(member.name, std::regex(R"(\.)"), R"(\.)") +
                          R"( \(session \d+\): [^;\n]*; [\d.]+ s, \d+ bytes in, \d+ bytes out; (\d+) writes)");
  REQUIRE(std::regex_search(log, match, closed));
  return std::stol(match[1]);
}

// "\xNN" for each byte of `bytes`, for test messages.
std::string chat_hex(const std::string& bytes) {
  std::string out;
  constexpr std::string_view digits = "0123456789abcdef";
  for (unsigned char c : bytes) out += std::string("\\x") + digits[c >> 4] + digits[c & 0xf];
  return out;
}

}  // namespace

TEST_CASE("three clients see exactly the tutorial's lines in order", "[chat]") {
  ServerProcess server(binary("chat_server"), yaml);
  Member a = join(server);
  Member b = join(server);
  CHECK(a.client.read_line() == "Please welcome " + b.name + ", who just joined us");
  Member c = join(server);
  CHECK(a.client.read_line() == "Please welcome " + c.name + ", who just joined us");
  CHECK(b.client.read_line() == "Please welcome " + c.name + ", who just joined us");

  a.client.send("hello everyone\r\n\r\n");  // the empty line is not sent on
  CHECK(b.client.read_line() == "Client " + a.name + " said: hello everyone");
  CHECK(c.client.read_line() == "Client " + a.name + " said: hello everyone");
  CHECK(a.client.silent_for(0.2s));  // not back to the sender

  b.client.send("bye\r\n");
  for (Member* m : {&a, &c}) {
    CHECK(m->client.read_line() == "Client " + b.name + " said: bye");
    CHECK(m->client.read_line() == "Unfortunately " + b.name + " left us");
  }
  CHECK(b.client.closed_by_peer());

  c.client.reset();  // an abrupt disconnect
  CHECK(a.client.read_line() == "Unfortunately " + c.name + " left us");
  CHECK(a.client.silent_for(0.2s));
}

TEST_CASE("/nick renames a client in later messages and /who lists the room", "[chat]") {
  ServerProcess server(binary("chat_server"), yaml);
  Member a = join(server);
  Member b = join(server);
  REQUIRE(a.client.read_line());  // b's welcome

  a.client.send("/nick alice\r\n");
  CHECK(a.client.read_line() == "You are now known as alice");
  CHECK(b.client.read_line() == a.name + " is now known as alice");
  a.client.send("hi\r\n");
  CHECK(b.client.read_line() == "Client alice said: hi");

  b.client.send("/who\r\n");
  CHECK(b.client.read_line() == "2 client(s) in this process (pid " + std::to_string(server.pid()) +
                                    ", personality multiplex):");
  CHECK(b.client.read_line() == "  alice (" + a.name + ")");
  CHECK(b.client.read_line() == "  " + b.name + " <- you");

  b.client.send("/nick has space\r\n/bogus\r\n/help\r\n");
  CHECK_THAT(*b.client.read_line(), StartsWith("Usage: /nick NAME"));
  CHECK(b.client.read_line() == "Unknown command /bogus; /help lists the commands");
  CHECK(b.client.read_line() == "Commands:");
  CHECK_THAT(*b.client.read_line(), Contains("/who"));
  CHECK_THAT(*b.client.read_line(), Contains("/nick NAME"));
  CHECK_THAT(*b.client.read_line(), Contains("/help"));
  CHECK_THAT(*b.client.read_line(), Contains("\"bye\""));

  a.client.send("bye\r\n");
  CHECK(b.client.read_line() == "Client alice said: bye");
  CHECK(b.client.read_line() == "Unfortunately alice left us");
}

TEST_CASE("chat: nobody can take an address or another's nick and UTF-8 nicks work", "[chat][hardening]") {
  ServerProcess server(binary("chat_server"), yaml);
  Member a = join(server);
  Member b = join(server);
  REQUIRE(a.client.read_line());  // b's welcome

  b.client.send("/nick " + a.name + "\r\n/nick 127.0.0.1\r\n");
  CHECK_THAT(*b.client.read_line(), StartsWith("Usage: /nick NAME (a nick may not "));
  CHECK_THAT(*b.client.read_line(), StartsWith("Usage: /nick NAME (a nick may not "));
  a.client.send("/nick Jos\xc3\xa9\r\n");
  CHECK(a.client.read_line() == "You are now known as Jos\xc3\xa9");
  CHECK(b.client.read_line() == a.name + " is now known as Jos\xc3\xa9");
  b.client.send("/nick jos\xc3\xa9\r\n/nick Jos\xc3\xa9\r\n");
  CHECK(b.client.read_line() == "The nick Jos\xc3\xa9 is taken");
  CHECK(b.client.read_line() == "The nick Jos\xc3\xa9 is taken");
  a.client.send("/nick JOS\xc3\xa9\r\n");  // renaming yourself is fine
  CHECK(a.client.read_line() == "You are now known as JOS\xc3\xa9");
  CHECK(a.client.silent_for(0.2s));
  CHECK(b.client.read_line() == "Jos\xc3\xa9 is now known as JOS\xc3\xa9");
}

TEST_CASE("chat: CR and ANSI escapes are relayed escaped and cannot forge a line", "[chat][hardening]") {
  ServerProcess server(binary("chat_server"), yaml);
  Member a = join(server);
  Member b = join(server);
  REQUIRE(a.client.read_line());  // b's welcome
  b.client.send("fake\rClient admin said: reboot now\r\n\x1b[2J\x1b]0;owned\x07 hi\r\n");
  CHECK(a.client.read_line() == "Client " + b.name + " said: fake\\x0dClient admin said: reboot now");
  CHECK(a.client.read_line() == "Client " + b.name + " said: \\x1b[2J\\x1b]0;owned\\x07 hi");
  b.client.send("/x\x1b[2J\r\n");
  CHECK(b.client.read_line() == "Unknown command /x\\x1b[2J; /help lists the commands");
}

// Issue 19, defect 8: "alice" plus an invisible or format character, or in a lookalike script,
// showed as "alice" to everyone else.
TEST_CASE("chat: invisible characters and lookalike scripts cannot impersonate a nick", "[chat][hardening][unicode]") {
  ServerProcess server(binary("chat_server"), yaml);
  Member a = join(server);
  Member b = join(server);
  REQUIRE(a.client.read_line());  // b's welcome
  a.client.send("/nick alice\r\n");
  REQUIRE(a.client.read_line() == "You are now known as alice");
  REQUIRE(b.client.read_line() == a.name + " is now known as alice");
  for (const std::string& tail : {std::string("\xf3\xa0\x81\x81"), std::string("\xef\xbf\xb9"), std::string("\xe1\xa0\x8e"),
                                  std::string("\xe3\x85\xa4"), std::string("\xef\xbe\xa0"), std::string("\xef\xb8\x8f"),
                                  std::string("\xcd\x8f"), std::string("\xe2\xa0\x80")}) {
    INFO("alice + " << chat_hex(tail));
    b.client.send("/nick alice" + tail + "\r\n");
    CHECK_THAT(*b.client.read_line(), StartsWith("Usage: /nick NAME (a nick may "));
  }
  b.client.send("/nick \xd0\xb0lice\r\n");  // Cyrillic a, Latin lice
  CHECK(b.client.read_line() == "Usage: /nick NAME (a nick may not mix scripts that look alike (e.g. Latin with Cyrillic or Greek))");
  // A whole-script lookalike is one script, so a valid nick: but it is the same nick.
  a.client.send("/nick copy\r\n");
  REQUIRE(a.client.read_line() == "You are now known as copy");
  REQUIRE(b.client.read_line() == "alice is now known as copy");
  b.client.send("/nick \xd1\x81\xd0\xbe\xd1\x80\xd1\x83\r\n");  // Cyrillic "сору"
  CHECK(b.client.read_line() == "The nick copy is taken");
  b.client.send("/nick COPY\r\n");
  CHECK(b.client.read_line() == "The nick copy is taken");
  CHECK(a.client.silent_for(0.2s));
  // U+2028 / U+2029 would start a new line on some terminals: escaped like CR.
  b.client.send("one\xe2\x80\xa8two\xe2\x80\xa9three\r\n");
  CHECK(a.client.read_line() == "Client " + b.name + " said: one\\u2028two\\u2029three");
}

TEST_CASE("a client that stops reading while another floods is dropped and the others get everything",
          "[chat][limits]") {
  ServerProcess server(binary("chat_server"), yaml + "max_output: 256K\n");
  Member slow = join(server);
  Member watcher = join(server);
  Member flooder = join(server);
  REQUIRE(slow.client.read_line());  // welcome for watcher; after this, slow never reads again
  REQUIRE(watcher.client.read_line());  // welcome for flooder

  // 6000 x ~1 KB: past what the kernel buffers for slow (up to 4 MiB of send buffer) plus its
  // 256 KiB bound in the server.
  const int messages = 6000;
  const std::string payload(1000, 'p');
  std::string first_wrong;  // Catch assertions are not thread-safe: the reader only records
  std::thread reader([&] {
    for (int i = 0; i < messages && first_wrong.empty(); ++i) {
      auto line = watcher.client.read_line(10s);
      if (line == "Unfortunately " + slow.name + " left us") line = watcher.client.read_line(10s);
      if (line != "Client " + flooder.name + " said: " + std::to_string(i) + " " + payload)
        first_wrong = "message " + std::to_string(i) + ": " + line.value_or("(nothing)").substr(0, 80);
    }
  });
  for (int i = 0; i < messages; ++i) {  // in bursts of 100 KB, so that a reading client keeps up
    flooder.client.send(std::to_string(i) + " " + payload + "\r\n");
    if (i % 100 == 99) std::this_thread::sleep_for(2ms);
  }
  reader.join();
  INFO(first_wrong);
  CHECK(first_wrong.empty());
  CHECK(server.wait_for_log("disconnecting " + slow.name));
  CHECK(slow.client.closed_by_peer(10s));
}

TEST_CASE("a thousand clients at once all get their welcome and a broadcast", "[chat][scale]") {
  ServerProcess server(binary("chat_server"), yaml, Launch().with_args({"--log_level=2"}));
  std::vector<Member> members;
  members.reserve(1000);
  for (int i = 0; i < 1000; ++i) members.push_back(join(server));
  members.front().client.send("hello thousand\r\n");
  const std::string expected = "Client " + members.front().name + " said: hello thousand";
  int received = 0;
  for (std::size_t i = 1; i < members.size(); ++i) {
    for (;;) {  // skip the joins announced before the message
      const auto line = members[i].client.read_line(10s);
      REQUIRE(line);
      if (*line == expected) break;
      REQUIRE_THAT(*line, StartsWith("Please welcome "));
    }
    ++received;
  }
  CHECK(received == 999);
}

TEST_CASE("chat: an over-long line and an idle client lose only their own connection", "[chat][limits]") {
  ServerProcess server(binary("chat_server"), yaml + "max_line: 100\ntimeout: 1\n");
  Member stays = join(server);
  Member talker = join(server);
  REQUIRE(stays.client.read_line());
  talker.client.send(std::string(300, 'x') + "\r\n");
  CHECK(talker.client.read_line() == "error: line too long");
  CHECK(stays.client.read_line() == "Unfortunately " + talker.name + " left us");
  stays.client.send("ping\r\n");  // keeps it from idling out for a while
  CHECK(stays.client.read_line(3s) == "error: timed out after 1 s without input");
  CHECK(stays.client.closed_by_peer());
}

TEST_CASE("chat: max_connections refuses the next client with 'server busy'", "[chat][limits]") {
  ServerProcess server(binary("chat_server"), yaml + "max_connections: 2\n");
  Member a = join(server);
  Member b = join(server);
  Client c(server.port());
  CHECK(c.read_line() == "error: server busy");
  CHECK(c.closed_by_peer());
}

TEST_CASE("chat: TERM delivers queued messages before the server exits", "[chat][signals]") {
  ServerProcess server(binary("chat_server"), yaml);
  Member reader = join(server);
  Member talker = join(server);
  REQUIRE(reader.client.read_line());
  for (int i = 0; i < 200; ++i) talker.client.send("message " + std::to_string(i) + " " + std::string(500, 'm') + "\r\n");
  talker.client.send("/who\r\n");  // answered only after all 200 were broadcast
  REQUIRE(talker.client.read_line(5s));
  server.signal(SIGTERM);
  for (int i = 0; i < 200; ++i)
    REQUIRE(reader.client.read_line() == "Client " + talker.name + " said: message " + std::to_string(i) + " " +
                                             std::string(500, 'm'));
  CHECK(reader.client.closed_by_peer());
  CHECK(server.wait_exit(10s) == 0);
}

TEST_CASE("chat under single: the room only ever holds one person", "[chat][single]") {
  ServerProcess server(binary("chat_server"), yaml, Launch().with_args({"--personality=single"}));
  Member first = join(server);
  Client second(server.port());  // waits in the backlog
  first.client.send("anyone there?\r\n/who\r\n");
  CHECK(first.client.read_line() == "1 client(s) in this process (pid " + std::to_string(server.pid()) +
                                         ", personality single):");
  CHECK(first.client.read_line() == "  " + first.name + " <- you");
  CHECK(second.silent_for(0.3s));  // the message reached nobody
  first.client.send("bye\r\n");
  CHECK(first.client.closed_by_peer());
  CHECK(second.read_line() == "Welcome, to the server!");
}

// The server is stopped while the newcomers connect, so all of them wait in the accept queue and
// arrive in one turn of its loop: their announcements must reach a member in one write (plus its
// own welcome), not one write per newcomer (the accept storm that cost a big room its CPU).
TEST_CASE("chat: a burst of joins reaches a member in a bounded number of writes", "[chat][coalesce]") {
  ServerProcess server(binary("chat_server"), yaml);
  Member member = join(server);
  constexpr int newcomers = 20;
  server.signal(SIGSTOP);
  std::vector<Client> clients;
  for (int i = 0; i < newcomers; ++i) clients.emplace_back(server.port());  // the kernel completes the handshakes
  server.signal(SIGCONT);
  for (int i = 0; i < newcomers; ++i) REQUIRE_THAT(member.client.read_line().value_or(""), StartsWith("Please welcome "));
  for (Client& client : clients) REQUIRE(client.read_line() == "Welcome, to the server!");
  CHECK(writes_to(server, member) <= 3);  // welcome, the burst, and one spare for a loop turn boundary
}

// The same for a burst of messages: twenty members talk at once, a listener gets them together.
TEST_CASE("chat: a burst of broadcasts reaches a member in a bounded number of writes", "[chat][coalesce]") {
  ServerProcess server(binary("chat_server"), yaml);
  Member listener = join(server);
  std::vector<Member> talkers;
  for (int i = 0; i < 20; ++i) talkers.push_back(join(server));
  for (int i = 0; i < 20; ++i) REQUIRE(listener.client.read_line());  // the joins
  server.signal(SIGSTOP);
  for (Member& talker : talkers) REQUIRE(talker.client.send("hello\r\n"));
  std::this_thread::sleep_for(100ms);  // the lines reach the stopped server's sockets
  server.signal(SIGCONT);
  for (int i = 0; i < 20; ++i) REQUIRE_THAT(listener.client.read_line().value_or(""), EndsWith(" said: hello"));
  const long joins_and_welcome = 22;  // at most one write per join and the welcome
  CHECK(writes_to(server, listener) <= joins_and_welcome + 2);
}
