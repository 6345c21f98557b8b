// Sequential handlers (Conversation) against the real binaries: the echo demo's two styles send
// the same bytes under every personality, the guess demo's dialogues (1,000 players in one
// Multiplex process, one per child under PreFork), and sequential_probe for timeouts,
// disconnects, exceptions, broadcasts, paused input, flush and TERM.

#include <catch2/catch.hpp>

#include <sys/socket.h>

#include <csignal>
#include <regex>
#include <set>
#include <thread>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

const std::string base_yaml = "host: 127.0.0.1\nport: 0\nlog_level: 3\n";

std::string personality_yaml(const std::string& personality) {
  std::string yaml = base_yaml + "personality: " + personality + "\n";
  if (personality == "prefork") yaml += "prefork:\n  min_servers: 2\n  max_servers: 4\n  min_spare_servers: 1\n  max_spare_servers: 2\n";
  return yaml;
}

// The pid in a banner differs between processes: everything else must be equal.
std::string without_pids(const std::string& text) { return std::regex_replace(text, std::regex(R"(pid \d+)"), "pid N"); }

// What one client sees of a scripted session: `script` parts sent 30 ms apart, then (when
// `half_close`) a FIN, then everything until the server closes.
std::string transcript(int port, const std::vector<std::string>& script, bool half_close) {
  Client client(port);
  for (const std::string& part : script) {
    client.send(part);
    std::this_thread::sleep_for(30ms);
  }
  if (half_close) ::shutdown(client.fd(), SHUT_WR);
  return without_pids(client.read_all(5s));
}

std::vector<std::string> echo_transcripts(const std::string& personality, const std::string& style) {
  ServerProcess server(binary("echo_server"), personality_yaml(personality) + "timeout: 0.5\nmax_line: 100\n",
                       Launch().with_args({"--style=" + style}));
  std::string pipelined;
  for (int i = 0; i < 2000; ++i) pipelined += "line " + std::to_string(i) + (i % 2 ? "\r\n" : "\n");
  std::vector<std::string> seen;
  seen.push_back(transcript(server.port(), {"hello\r\n", "  spaces\tand tabs \n", "\r\n", "split ", "line\r\n", "last"}, true));
  seen.push_back(transcript(server.port(), {"first\r\nquit\r\nnever echoed\r\n"}, false));
  seen.push_back(transcript(server.port(), {"ok\n", std::string(150, 'x') + "\n", "after\n"}, false));
  seen.push_back(transcript(server.port(), {"before the idle timeout\n"}, false));
  seen.push_back(transcript(server.port(), {pipelined, "bye\n"}, false));
  return seen;
}

// Plays one round of guess by bisection on every client at once; returns the players that won.
struct Player {
  Client client;
  int low = 1;
  int high = 100;
  int guess = 0;
  bool won = false;
};

// The next line that is not another player's announcement.
std::optional<std::string> own_line(Client& client) {
  for (;;) {
    auto line = client.read_line(20s);
    if (!line || !line->starts_with("***")) return line;
  }
}

}  // namespace

TEST_CASE("sequential echo sends the same bytes as callback echo under every personality", "[conversation][echo]") {
  for (const std::string personality : {"single", "prefork", "multiplex"}) {
    INFO("personality " << personality);
    const auto callbacks = echo_transcripts(personality, "callbacks");
    const auto sequential = echo_transcripts(personality, "sequential");
    REQUIRE(callbacks.size() == sequential.size());
    for (std::size_t i = 0; i < callbacks.size(); ++i) {
      INFO("transcript " << i);
      CHECK(sequential[i] == callbacks[i]);
    }
    CHECK_THAT(callbacks[0], Contains("hello\r\n  spaces\tand tabs \r\n\r\nsplit line\r\nlast\r\n"));
    CHECK_THAT(callbacks[2], Contains("ok\r\nerror: line too long\r\n"));
    CHECK_THAT(callbacks[3], Contains("error: timed out after 0.5 s without input"));
    CHECK_THAT(callbacks[4], Contains("line 1999\r\n"));
  }
}

TEST_CASE("guess: one multiplex process plays 1000 full dialogues at once", "[conversation][guess]") {
  ServerProcess server(binary("guess_server"), "host: 127.0.0.1\nport: 0\nlog_level: 2\n",
                       Launch().with_args({"--announce_wins=false"}));
  std::vector<Player> players;
  players.reserve(1000);
  for (int i = 0; i < 1000; ++i) players.push_back(Player{Client(server.port())});
  for (Player& player : players) {
    REQUIRE(own_line(player.client).value_or("") == "Welcome to \"guess\" (personality multiplex, pid " +
                                                       std::to_string(server.pid()) + ")");
    REQUIRE(own_line(player.client).value_or("") == "I am thinking of a number from 1 to 100. Your guess?");
  }
  std::size_t playing = players.size();
  for (int round = 0; round < 8 && playing > 0; ++round) {
    for (Player& player : players) {
      if (player.won) continue;
      player.guess = (player.low + player.high) / 2;
      player.client.send(std::to_string(player.guess) + "\r\n");
    }
    for (Player& player : players) {
      if (player.won) continue;
      const std::string reply = own_line(player.client).value_or("(nothing)");
      if (reply.starts_with("Right!")) {
        player.won = true;
        --playing;
        REQUIRE(own_line(player.client) == "Play again? (yes/no)");
        player.client.send("no\r\n");
      } else if (reply == std::to_string(player.guess) + " is too low. Your guess?") {
        player.low = player.guess + 1;
      } else {
        REQUIRE(reply == std::to_string(player.guess) + " is too high. Your guess?");
        player.high = player.guess - 1;
      }
    }
  }
  CHECK(playing == 0);
  for (Player& player : players) CHECK(player.client.read_all(10s) == "Bye!\r\n");
}

TEST_CASE("guess: prefork serves one player per child and a win reaches the waiting players of its process",
          "[conversation][guess][prefork]") {
  ServerProcess prefork(binary("guess_server"), personality_yaml("prefork"));
  std::set<long> pids;
  std::vector<Client> clients;
  for (int i = 0; i < 2; ++i) {
    clients.emplace_back(prefork.port());
    const auto banner = own_line(clients.back());
    REQUIRE(banner);
    CHECK_THAT(*banner, Contains("personality prefork"));
    pids.insert(pid_in(*banner));
  }
  CHECK(pids.size() == 2);
  CHECK(pids.count(prefork.pid()) == 0);

  ServerProcess multiplex(binary("guess_server"), base_yaml);
  Client waiting(multiplex.port());
  Client winner(multiplex.port());
  REQUIRE(waiting.read_line());
  REQUIRE(waiting.read_line());  // the question: now it waits for its own client's guess
  REQUIRE(winner.read_line());
  REQUIRE(winner.read_line());
  int low = 1, high = 100;
  for (int tries = 0; tries < 8; ++tries) {
    const int guess = (low + high) / 2;
    winner.send(std::to_string(guess) + "\r\n");
    const std::string reply = winner.read_line().value_or("");
    if (reply.starts_with("Right!")) break;
    if (reply.find("too low") != std::string::npos) low = guess + 1;
    else high = guess - 1;
  }
  const auto news = waiting.read_line(3s);
  REQUIRE(news);
  CHECK_THAT(*news, StartsWith("*** 127.0.0.1:" + std::to_string(winner.local_port()) + " found "));
}

TEST_CASE("a sequential read that times out lets the conversation go on", "[conversation][timeout]") {
  ServerProcess server(binary("sequential_probe"), base_yaml);
  Client client(server.port());
  REQUIRE(client.read_line());
  client.send("read 0.2\r\n");
  CHECK(client.read_line(3s) == "timed out");
  client.send("read 5\r\n");
  std::this_thread::sleep_for(100ms);
  client.send("in time\r\n");
  CHECK(client.read_line() == "got in time");
  client.send("echo still here\r\n");
  CHECK(client.read_line() == "still here");

  ServerProcess guess(binary("guess_server"), base_yaml, Launch().with_args({"--answer_timeout=0.3"}));
  Client player(guess.port());
  REQUIRE(player.read_line());
  REQUIRE(player.read_line());
  const auto verdict = player.read_line(3s);
  REQUIRE(verdict);
  CHECK(std::regex_match(*verdict, std::regex(R"(Too slow! It was \d+\. Bye!)")));
  CHECK(player.closed_by_peer());
}

TEST_CASE("a client that disconnects mid-dialogue ends its waiting coroutine and frees it", "[conversation][cancel]") {
  ServerProcess server(binary("sequential_probe"), personality_yaml("multiplex"));
  Client other(server.port());
  REQUIRE(other.read_line());
  for (bool reset : {false, true}) {
    Client client(server.port());
    REQUIRE(client.read_line());
    client.send("echo one\r\n");
    REQUIRE(client.read_line() == "one");
    client.send("read 30\r\n");  // a timed read, waiting
    std::this_thread::sleep_for(50ms);
    reset ? client.reset() : client.close();
  }
  CHECK(server.wait_for_log("conversation of session 2 freed", 3s));
  CHECK(server.wait_for_log("conversation of session 3 freed", 3s));
  other.send("echo unaffected\r\n");
  CHECK(other.read_line() == "unaffected");
  // A coroutine awaiting a timer of its own when its session ends is cancelled too.
  Client sleeper(server.port());
  REQUIRE(sleeper.read_line());
  sleeper.send("sleep 30\r\nquit\r\n");
  std::this_thread::sleep_for(100ms);
  server.signal(SIGQUIT);
  REQUIRE(server.wait_exit(5s) == 0);
  CHECK(server.count_in_log("freed") == 4);
}

// Second hardening round, item 10: a client that resets its connection while the coroutine awaits
// something else (a timer of its own) ends the session at once, under every personality, and
// the pending await is cancelled; a FIN meanwhile is only an end of input: the coroutine finishes
// its sleep, its reply arrives, and its next read sees the end.
TEST_CASE("a reset during a sequential sleep ends the session at once and a FIN waits for the reply",
          "[conversation][cancel][hardening]") {
  for (const std::string personality : {"multiplex", "prefork", "fork", "single"}) {
    INFO(personality);
    ServerProcess server(binary("sequential_probe"), personality_yaml(personality));
    {
      Client client(server.port());
      REQUIRE(client.read_line());
      client.send("sleep 30\r\n");
      std::this_thread::sleep_for(100ms);
      client.reset();
    }
    CHECK(eventually([&] { return server.count_in_log("freed") == 1; }, 3s));  // session ids are per process
    CHECK(server.count_in_log("slept") == 0);
    Client finishing(server.port());
    REQUIRE(finishing.read_line());
    finishing.send("sleep 0.5\r\necho after\r\n");
    std::this_thread::sleep_for(100ms);
    ::shutdown(finishing.fd(), SHUT_WR);
    CHECK(finishing.read_line(5s) == "slept");
    CHECK(finishing.read_line(5s) == "after");
    CHECK(finishing.read_line(5s) == "no more input");
    CHECK(eventually([&] { return server.count_in_log("freed") == 2; }, 3s));
  }
}

TEST_CASE("an exception in the middle of a dialogue ends that session only", "[conversation][errors]") {
  ServerProcess server(binary("sequential_probe"), personality_yaml("multiplex"));
  server.expect_errors();
  Client bystander(server.port());
  REQUIRE(bystander.read_line());
  Client client(server.port());
  REQUIRE(client.read_line());
  const int port = client.local_port();
  client.send("echo before\r\n");
  CHECK(client.read_line() == "before");
  client.send("throw\r\necho never\r\n");  // what the failing step queued is dropped, as for callbacks
  CHECK(client.closed_by_peer());
  CHECK(server.wait_for_log("handler failed for 127.0.0.1:" + std::to_string(port) + " (session 2): probe exception"));
  CHECK(server.wait_for_log("conversation of session 2 freed"));
  bystander.send("echo alive\r\n");
  CHECK(bystander.read_line() == "alive");
}

TEST_CASE("a broadcast reaches a sequential session while it waits for its own client", "[conversation][broadcast]") {
  ServerProcess server(binary("sequential_probe"), personality_yaml("multiplex"));
  Client listener(server.port());
  Client speaker(server.port());
  REQUIRE(listener.read_line());
  REQUIRE(speaker.read_line());
  speaker.send("say hello from the speaker\r\n");
  CHECK(listener.read_line() == "hello from the speaker");
  listener.send("echo and it still reads\r\n");
  CHECK(listener.read_line() == "and it still reads");
}

TEST_CASE("input arriving while the coroutine is busy waits for it instead of passing max_line", "[conversation][limits]") {
  ServerProcess server(binary("sequential_probe"), personality_yaml("multiplex") + "max_line: 1K\n");
  Client client(server.port());
  REQUIRE(client.read_line());
  std::string burst = "sleep 0.3\r\n";
  for (int i = 0; i < 5000; ++i) burst += "echo " + std::to_string(i) + "\r\n";  // ~50K, far past max_line
  client.send(burst);
  CHECK(client.read_line(3s) == "slept");
  for (int i = 0; i < 5000; ++i) REQUIRE(client.read_line() == std::to_string(i));
  client.send(std::string(2000, 'x') + "\r\n");  // a line really too long is still refused
  CHECK(client.read_line() == "error: line too long");
  CHECK(client.closed_by_peer());
}

TEST_CASE("flush lets a sequential producer outlast max_output for a slow reader", "[conversation][limits]") {
  ServerProcess server(binary("sequential_probe"), personality_yaml("multiplex") + "max_output: 128K\n");
  Client client(server.port());
  REQUIRE(client.read_line());
  client.send("flood 4000000\r\n");
  std::this_thread::sleep_for(300ms);  // the kernel buffers fill; the coroutine waits in flush
  std::size_t bytes = 0;
  std::optional<std::string> line;
  while ((line = client.read_line(5s)) && line->starts_with("fff")) bytes += line->size() + 2;
  CHECK(bytes == 4000000);
  CHECK(line == "flushed 0");
  CHECK(server.count_in_log("output queue") == 0);
}

TEST_CASE("TERM ends 100 coroutines waiting on reads with their output delivered", "[conversation][signals]") {
  ServerProcess server(binary("sequential_probe"), personality_yaml("multiplex") + "graceful_timeout: 5\n");
  std::vector<Client> clients;
  for (int i = 0; i < 100; ++i) {
    clients.emplace_back(server.port());
    REQUIRE(clients.back().read_line());
  }
  for (int i = 0; i < 100; ++i) clients[i].send("echo reply " + std::to_string(i) + "\r\n");  // not read yet
  std::this_thread::sleep_for(200ms);
  const auto start = std::chrono::steady_clock::now();
  server.signal(SIGTERM);
  for (int i = 0; i < 100; ++i) CHECK(clients[i].read_all(5s) == "reply " + std::to_string(i) + "\r\n");
  REQUIRE(server.wait_exit(6s) == 0);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK(server.count_in_log("freed") == 100);
  CHECK(server.count_in_log("graceful timeout") == 0);
}

TEST_CASE("after HUP a waiting conversation goes on in the old image's drainer until it ends", "[conversation][restart]") {
  ServerProcess server(binary("sequential_probe"), personality_yaml("multiplex") + "graceful_timeout: 5\n");
  Client held(server.port());
  REQUIRE(held.read_line());
  held.send("echo before\r\n");
  REQUIRE(held.read_line() == "before");  // now waiting in read_line
  server.signal(SIGHUP);
  REQUIRE(eventually([&] { return server.count_in_log("(restarted)") == 1; }));
  held.send("echo after the restart\r\n");
  CHECK(held.read_line() == "after the restart");
  REQUIRE(server.wait_for_log("of the previous image"));  // the old image let go: it accepts no more
  Client fresh(server.port());
  const auto banner = fresh.read_line();
  REQUIRE(banner);
  CHECK(pid_in(*banner) != server.pid());  // the new image, started beside the first, serves new clients
  held.send("quit\r\n");
  CHECK(held.closed_by_peer());
  CHECK(eventually([&] { return server.count_in_log("conversation of session 1 freed") == 1; }, 5s));
}
