// The Redis bus against a real redis-server started on a free loopback port (never a mock): one
// chat room across PreFork children, Multiplex and Single processes, and two network namespaces;
// Redis killed, stopped, cutting the subscriber, asking for a password; binary bytes; presence.

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "bus/envelope.hpp"
#include "chat_protocol.hpp"
#include "fanout_scenario.hpp"
#include "harness.hpp"
#include "metrics_checks.hpp"
#include "redis_set.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

// Fast failure handling for tests: probes, backoff, heartbeats and TTLs in fractions of seconds.
std::string bus_yaml(const std::string& url, const std::string& more = "", const std::string& ttl = "1.5") {
  return "host: 127.0.0.1\nport: 0\nlog_level: 3\nbus: " + url +
         "\nbus_probe_interval: 0.3\nbus_backoff_max: 0.3\nbus_connect_timeout: 0.5\nbus_presence_ttl: " + ttl +
         "\nbus_heartbeat: 0.3\n" + more;
}

const std::string prefork_block = "personality: prefork\nprefork:\n  min_servers: 2\n  max_servers: 12\n"
                                  "  min_spare_servers: 1\n  max_spare_servers: 3\n";

struct Chatter {
  Client client;
  std::string name;  // HOST:PORT as the others see it
  long pid = -1;     // the process serving it
};

Chatter enter(int port) {
  Client client(port);
  REQUIRE(client.read_line() == "Welcome, to the server!");
  const auto info = client.read_line();
  REQUIRE(info);
  const long pid = pid_in(*info);
  const std::string name = "127.0.0.1:" + std::to_string(client.local_port());
  return Chatter{std::move(client), name, pid};
}

// Asks /who and returns the member lines (other lines that arrive meanwhile are skipped).
std::vector<std::string> who(Chatter& chatter) {
  chatter.client.send("/who\r\n");
  for (;;) {
    const auto line = chatter.client.read_line(3s);
    if (!line) return {};
    if (line->find(" client(s) in ") == std::string::npos) continue;
    const int count = std::stoi(*line);
    std::vector<std::string> members;
    for (int i = 0; i < count; ++i)
      if (auto member = chatter.client.read_line()) members.push_back(*member);
    return members;
  }
}

// Waits until `observer` sees `count` members (each joined: its subscription is confirmed), then
// lets the announcements in flight arrive and drops them.
void settle(std::vector<Chatter*> chatters, std::size_t count) {
  REQUIRE(eventually([&] { return who(*chatters.front()).size() == count; }, 10s));
  for (Chatter* chatter : chatters)
    while (chatter->client.read_line(0.3s)) {
    }
}

// Every chatter sends `rounds` lines at once; each must receive every other's lines, and any two
// must have received the lines they both got in the same order.
void check_one_order(std::vector<Chatter*> chatters, int rounds) {
  for (int round = 0; round < rounds; ++round)
    for (std::size_t i = 0; i < chatters.size(); ++i)
      chatters[i]->client.send("m" + std::to_string(round) + "-" + std::to_string(i) + "\r\n");
  std::vector<std::vector<std::string>> heard(chatters.size());
  const std::size_t expected = (chatters.size() - 1) * rounds;
  for (std::size_t i = 0; i < chatters.size(); ++i) {
    while (heard[i].size() < expected) {
      const auto line = chatters[i]->client.read_line(5s);
      REQUIRE(line);
      heard[i].push_back(*line);
    }
    CHECK(chatters[i]->client.silent_for(0.1s));
  }
  for (std::size_t a = 0; a < chatters.size(); ++a)
    for (std::size_t b = a + 1; b < chatters.size(); ++b) {
      auto common = [&](const std::vector<std::string>& lines) {
        std::vector<std::string> kept;
        for (const std::string& line : lines)
          if (line.find(chatters[a]->name + " said") == std::string::npos &&
              line.find(chatters[b]->name + " said") == std::string::npos)
            kept.push_back(line);
        return kept;
      };
      CHECK(common(heard[a]) == common(heard[b]));
    }
}

// `from` says `text`; every chatter of `to` hears it.
void check_crosses(Chatter& from, std::vector<Chatter*> to, const std::string& text) {
  from.client.send(text + "\r\n");
  for (Chatter* chatter : to) CHECK(chatter->client.read_line() == "Client " + from.name + " said: " + text);
}

}  // namespace

TEST_CASE("a malformed bus address is a config error naming file line and column", "[bus]") {
  TempDir dir;
  const auto config = dir.write("chat.yaml", "port: 0\nbus: redis://127.0.0.1\n");
  const Outcome bad = run(binary("chat_server"), {"--config", config.string()});
  CHECK(bad.status == 2);
  CHECK_THAT(bad.output, Contains("chat.yaml:2:6") && Contains("the port is missing"));
  CHECK_THAT(bad.output, !Contains("listening on"));
  const Outcome secret = run(binary("chat_server"), {"--port=0", "--bus=redis://:hunter2@host:99999"});
  CHECK(secret.status == 2);
  CHECK_THAT(secret.output, Contains("--bus=") && Contains("1 to 65535") && Contains("redis://:***@host:99999"));
  CHECK(run(binary("chat_server"), {"--port=0", "--bus=http://127.0.0.1:6379"}).status == 2);
  CHECK(run(binary("chat_server"), {"--port=0", "--bus=redis+unix://relative.sock"}).status == 2);
  CHECK(run(binary("chat_server"), {"--port=0", "--bus=redis://127.0.0.1:6379", "--bus_heartbeat=60",
                                    "--bus_presence_ttl=30"}).status == 2);
  CHECK(run(binary("chat_server"), {"--check-config", "--bus=redis+unix:///run/redis.sock"}).status == 0);
}

TEST_CASE("the bus password never appears in errors or the log", "[bus]") {
  const std::string secret = "hunter2-do-not-print";
  TempDir dir;
  // Malformed addresses, on the command line and in a file; a mistyped key; --check-config's dump.
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--port=0", "--bus=redis://:" + secret + "@host:99999"},
        std::vector<std::string>{"--port=0", "--bus=redis://:" + secret + "@127.0.0.1"},
        std::vector<std::string>{"--port=0", "--bus", "redis://user:" + secret + "@127.0.0.1:6379"},
        std::vector<std::string>{"--port=0", "--buss=redis://:" + secret + "@127.0.0.1:6379"},
        std::vector<std::string>{"--port=0", "--bus=redis+unix://:" + secret + "@relative.sock"},
        std::vector<std::string>{"--port=0", "--bus=", "redis://:" + secret + "@127.0.0.1:6379"},  // a stray word
        std::vector<std::string>{"--port=0", "bus=redis://:" + secret + "@127.0.0.1:6379"},        // no dashes
        std::vector<std::string>{"--config", dir.write("bad.yaml", "port: 0\nbus: redis://:" + secret + "@127.0.0.1\n").string()}}) {
    const Outcome bad = run(binary("chat_server"), args);
    CHECK(bad.status == 2);
    CHECK_THAT(bad.output, !Contains(secret) && Contains("://:***@"));
  }
  const Outcome shown = run(binary("chat_server"), {"--check-config", "--bus=redis://:" + secret + "@127.0.0.1:6379"});
  CHECK(shown.status == 0);
  CHECK_THAT(shown.output, Contains("redis://:***@127.0.0.1:6379") && !Contains(secret));

  // An unreachable Redis, then a Redis refusing the password: warnings and errors, no secret.
  const int port = free_port();
  ServerProcess unreachable(binary("chat_server"),
                            bus_yaml("redis://:" + secret + "@127.0.0.1:" + std::to_string(port)));
  Chatter a = enter(unreachable.port());
  CHECK(unreachable.wait_for_log("retrying until Redis answers"));
  a.client.send("hello\r\n");
  CHECK(unreachable.wait_for_log("messages reach only this process's members"));
  Redis redis({"--requirepass", "the-right-one"}, port);
  CHECK(eventually([&] { return unreachable.count_in_log("AUTH refused: WRONGPASS") >= 2; }, 10s));
  unreachable.expect_errors();
  CHECK(unreachable.stop() == 0);
  CHECK_THAT(unreachable.log(), !Contains(secret));
}

TEST_CASE("a unix-socket Redis carries the chat between two processes", "[bus]") {
  TempDir dir;
  const std::string socket = (dir.path() / "redis.sock").string();
  // No TCP port at all: only the socket can carry it. With a password, to check AUTH there too.
  Redis redis({"--port", "0", "--unixsocket", socket, "--unixsocketperm", "700", "--requirepass", "over-unix"});
  const std::string url = "redis+unix://:over-unix@" + socket;
  ServerProcess one(binary("chat_server"), bus_yaml(url));
  ServerProcess two(binary("chat_server"), bus_yaml(url, prefork_block));
  Chatter a = enter(one.port());  // the bus connects when the room is first used
  CHECK(one.wait_for_log("bus: connected to redis+unix://" + socket));
  Chatter b = enter(two.port());
  Chatter c = enter(two.port());
  CHECK(a.pid != b.pid);
  settle({&a, &b, &c}, 3);
  check_crosses(a, {&b, &c}, "over a unix socket");
  check_crosses(c, {&a, &b}, "and back");
  CHECK_THAT(one.log() + two.log(), !Contains("over-unix"));
}

TEST_CASE("a host name is resolved before connecting and reaches Redis", "[bus]") {
  Redis redis;
  const std::string url = "redis://localhost:" + std::to_string(redis.port());
  ServerProcess one(binary("chat_server"), bus_yaml(url));
  ServerProcess two(binary("chat_server"), bus_yaml(url, "personality: single\n"));
  Chatter a = enter(one.port());  // the bus connects when the room is first used
  CHECK(one.wait_for_log("bus: connected to " + url));
  Chatter b = enter(two.port());
  settle({&a, &b}, 2);
  check_crosses(a, {&b}, "by name");
  check_crosses(b, {&a}, "by name too");
}

TEST_CASE("eight PreFork children in eight pids hear every message in one order", "[bus]") {
  Redis redis;
  ServerProcess server(binary("chat_server"), bus_yaml(redis.url(), prefork_block));
  std::vector<Chatter> chatters;
  for (int i = 0; i < 8; ++i) chatters.push_back(enter(server.port()));
  std::set<long> pids;
  std::vector<Chatter*> all;
  for (Chatter& chatter : chatters) {
    pids.insert(chatter.pid);
    all.push_back(&chatter);
  }
  CHECK(pids.size() == 8);
  settle(all, 8);
  check_one_order(all, 3);
}

TEST_CASE("two Multiplex processes share one room in one order", "[bus]") {
  Redis redis;
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url()));
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url()));
  std::vector<Chatter> chatters;
  for (int i = 0; i < 6; ++i) chatters.push_back(enter(i % 2 ? two.port() : one.port()));
  std::vector<Chatter*> all;
  for (Chatter& chatter : chatters) all.push_back(&chatter);
  settle(all, 6);
  check_one_order(all, 4);
}

TEST_CASE("Single and PreFork share one room", "[bus]") {
  Redis redis;
  ServerProcess single(binary("chat_server"), bus_yaml(redis.url(), "personality: single\n"));
  ServerProcess prefork(binary("chat_server"), bus_yaml(redis.url(), prefork_block));
  Chatter a = enter(single.port());
  Chatter b = enter(prefork.port());
  Chatter c = enter(prefork.port());
  settle({&a, &b, &c}, 3);
  check_one_order({&a, &b, &c}, 3);
  check_crosses(a, {&b, &c}, "from single");
  // Last words leave before a PreFork child or a Single process goes back to waiting.
  for (auto [leaving, staying] : {std::pair{&c, std::vector<Chatter*>{&a, &b}}, std::pair{&a, std::vector<Chatter*>{&b}}}) {
    leaving->client.send("bye\r\n");
    for (Chatter* chatter : staying) {
      CHECK(chatter->client.read_line() == "Client " + leaving->name + " said: bye");
      CHECK(chatter->client.read_line() == "Unfortunately " + leaving->name + " left us");
    }
  }
}

TEST_CASE("Redis killed and restarted on the same port: every process comes back", "[bus]") {
  Redis redis;
  ServerProcess multiplex(binary("chat_server"), bus_yaml(redis.url()));
  ServerProcess prefork(binary("chat_server"), bus_yaml(redis.url(), prefork_block));
  Chatter a = enter(multiplex.port());
  Chatter b = enter(multiplex.port());
  Chatter c = enter(prefork.port());
  settle({&a, &b, &c}, 3);
  check_crosses(a, {&b, &c}, "before");

  redis.kill();
  REQUIRE(multiplex.wait_for_log("serving this process's clients only", 5s));
  REQUIRE(prefork.wait_for_log("serving this process's clients only", 5s));
  check_crosses(a, {&b}, "while down");  // delivered in the process only
  CHECK(c.client.silent_for(0.3s));
  CHECK(multiplex.wait_for_log("messages reach only this process's members"));

  redis.start();
  CHECK(multiplex.wait_for_log("bus: reconnected", 5s));
  CHECK(prefork.wait_for_log("bus: reconnected", 5s));
  settle({&a, &b, &c}, 3);
  check_crosses(c, {&a, &b}, "after");
  check_crosses(a, {&b, &c}, "again");
  CHECK(multiplex.count_in_log("closed 127.0.0.1") == 0);  // no session lost
  CHECK(prefork.count_in_log("closed 127.0.0.1") == 0);
}

TEST_CASE("a stopped Redis is found silent by the probe and rejoined after SIGCONT", "[bus]") {
  Redis redis;
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url()));
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url()));
  Chatter a = enter(one.port());
  Chatter b = enter(two.port());
  settle({&a, &b}, 2);
  redis.signal(SIGSTOP);
  CHECK(one.wait_for_log("silent: a liveness probe", 5s));
  CHECK(two.wait_for_log("silent: a liveness probe", 5s));
  redis.signal(SIGCONT);
  CHECK(one.wait_for_log("bus: reconnected", 10s));
  CHECK(two.wait_for_log("bus: reconnected", 10s));
  settle({&a, &b}, 2);
  check_crosses(a, {&b}, "after the stop");
}

TEST_CASE("CLIENT KILL TYPE pubsub is followed by a resubscription", "[bus]") {
  Redis redis;
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url()));
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url()));
  Chatter a = enter(one.port());
  Chatter b = enter(two.port());
  settle({&a, &b}, 2);
  CHECK_THAT(redis.cli({"CLIENT", "KILL", "TYPE", "pubsub"}), Contains("2"));
  CHECK(one.wait_for_log("bus: reconnected", 5s));
  CHECK(two.wait_for_log("bus: reconnected", 5s));
  settle({&a, &b}, 2);
  check_crosses(b, {&a}, "resubscribed");
}

TEST_CASE("requirepass with the right password works and a wrong one serves locally", "[bus]") {
  Redis redis({"--requirepass", "s3cret"});
  ServerProcess right1(binary("chat_server"), bus_yaml(redis.url("s3cret")));
  ServerProcess right2(binary("chat_server"), bus_yaml(redis.url("s3cret")));
  ServerProcess wrong(binary("chat_server"), bus_yaml(redis.url("guess")));
  wrong.expect_errors();
  Chatter a = enter(right1.port());
  Chatter b = enter(right2.port());
  settle({&a, &b}, 2);
  check_crosses(a, {&b}, "authenticated");

  Chatter c = enter(wrong.port());
  Chatter d = enter(wrong.port());
  CHECK(c.client.read_line() == "Please welcome " + d.name + ", who just joined us");
  check_crosses(d, {&c}, "locally");
  CHECK(a.client.silent_for(0.3s));
  CHECK(eventually([&] { return wrong.count_in_log("AUTH refused: WRONGPASS") >= 3; }, 10s));
  for (const std::string& line : wrong.error_lines()) CHECK_THAT(line, Contains("AUTH refused"));
  CHECK_THAT(wrong.log(), !Contains("guess"));
}

TEST_CASE("binary bytes cross intact", "[bus]") {
  Redis redis;
  ServerProcess one(binary("room_relay"), bus_yaml(redis.url()));
  ServerProcess two(binary("room_relay"), bus_yaml(redis.url()));
  Client a(one.port());
  Client b(two.port());
  REQUIRE(a.read_line() == "joined");
  REQUIRE(b.read_line() == "joined");
  std::string bytes("\0\xff\r\nx\0\x01\x7f\xfe\n", 11);
  REQUIRE(bytes.size() == 11);
  // The first publish may race b's subscription on the Redis side: joined was sent after it was
  // confirmed, so from here on every byte arrives.
  a.send(bytes);
  std::string got;
  REQUIRE(eventually([&] {
    got += b.read_all(0.05s);
    return got.size() >= bytes.size();
  }, 5s));
  CHECK(got == bytes);
  CHECK(a.silent_for(0.2s));
}

TEST_CASE("presence lists every process and drops a killed one within the TTL", "[bus]") {
  Redis redis;
  // A TTL of 3 s: long enough that a loaded machine still sees the killed entry right after the
  // kill, short enough to wait for.
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), "", "3"));
  auto two = std::make_unique<ServerProcess>(binary("chat_server"), bus_yaml(redis.url(), "", "3"));
  Chatter a = enter(one.port());
  Chatter b = enter(two->port());
  settle({&a, &b}, 2);
  a.client.send("/nick alice\r\n");
  REQUIRE(a.client.read_line() == "You are now known as alice");
  REQUIRE(b.client.read_line() == a.name + " is now known as alice");
  const std::vector<std::string> members = who(b);
  REQUIRE(members.size() == 2);
  const std::string pid1 = std::to_string(one.pid());
  const std::string pid2 = std::to_string(two->pid());
  CHECK(std::count_if(members.begin(), members.end(), [&](const std::string& m) {
          return m.find("alice (" + a.name + ") [pid " + pid1 + " on ") == 2;
        }) == 1);
  CHECK(std::count_if(members.begin(), members.end(), [&](const std::string& m) {
          return m.find(b.name + " [pid " + pid2 + " on ") == 2 && m.ends_with(" <- you");
        }) == 1);

  two->signal(SIGKILL);
  REQUIRE(two->wait_exit(5s));
  two.reset();
  CHECK(who(a).size() == 2);  // the killed process's entry lives until its TTL
  REQUIRE(eventually([&] { return who(a).size() == 1; }, 8s));
}

TEST_CASE("a nick is unique in the room across processes", "[bus]") {
  Redis redis;
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), "", "60"));
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url(), prefork_block, "60"));
  Chatter a = enter(one.port());
  Chatter b = enter(two.port());
  Chatter c = enter(two.port());
  settle({&a, &b, &c}, 3);
  a.client.send("/nick Alice\r\n");
  REQUIRE(a.client.read_line() == "You are now known as Alice");
  REQUIRE(b.client.read_line() == a.name + " is now known as Alice");
  REQUIRE(c.client.read_line() == a.name + " is now known as Alice");
  // Another process, another case: taken, named as its holder wrote it; nobody hears of it.
  b.client.send("/nick aLICE\r\n");
  CHECK(b.client.read_line() == "The nick Alice is taken");
  // Asked at once by two clients of two processes: exactly one gets it.
  b.client.send("/nick bob\r\n");
  a.client.send("/nick BOB\r\n");
  // The winner's announcement may reach the loser before the loser's own answer: skipped.
  auto answer = [](Chatter& chatter) {
    for (;;) {
      auto line = chatter.client.read_line();
      if (!line || line->starts_with("You are") || line->starts_with("The nick")) return line;
    }
  };
  const auto to_b = answer(b);
  const auto to_a = answer(a);
  REQUIRE(to_a);
  REQUIRE(to_b);
  const bool b_won = *to_b == "You are now known as bob";
  CHECK(b_won != (*to_a == "You are now known as BOB"));
  CHECK((b_won ? *to_a : *to_b) == (b_won ? "The nick bob is taken" : "The nick BOB is taken"));
  settle({&a, &b, &c}, 3);  // drops the announcement of the winner
  // A member that leaves lets go of its nick at once; its own old nick is free again too.
  const std::string a_nick = b_won ? "Alice" : "BOB";  // winning BOB let go of Alice
  a.client.send("bye\r\n");
  auto heard = [&c] {  // a late announcement of the race's winner is skipped
    auto line = c.client.read_line();
    while (line && line->find(" is now known as ") != std::string::npos) line = c.client.read_line();
    return line;
  };
  REQUIRE(heard() == "Client " + a_nick + " said: bye");
  REQUIRE(heard() == "Unfortunately " + a_nick + " left us");
  c.client.send("/nick bob\r\n");
  CHECK(c.client.read_line() == (b_won ? "The nick bob is taken" : "You are now known as bob"));
  c.client.send("/nick alice\r\n");
  CHECK(c.client.read_line() == "You are now known as alice");
  // b holds bob if it won it; else c took bob after a left, and let go of it for alice.
  const std::string names = redis.cli({"HKEYS", "chat:names:chat"});
  CHECK_THAT(names, Contains("alice"));
  CHECK((names.find("bob") != std::string::npos) == b_won);
}

TEST_CASE("a clean exit removes its presence entries at once", "[bus]") {
  Redis redis;
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), "", "60"));
  auto two = std::make_unique<ServerProcess>(binary("chat_server"), bus_yaml(redis.url(), "", "60"));
  Chatter a = enter(one.port());
  Chatter b = enter(two->port());
  Chatter c = enter(two->port());
  settle({&a, &b, &c}, 3);
  CHECK(two->stop() == 0);
  two.reset();
  CHECK(who(a).size() == 1);
  CHECK_THAT(redis.cli({"HLEN", "chat:presence:chat"}), Contains("1"));
}

TEST_CASE("a Redis unreachable at start-up is waited for while serving locally", "[bus]") {
  const int port = free_port();
  ServerProcess one(binary("chat_server"), bus_yaml("redis://127.0.0.1:" + std::to_string(port)));
  Chatter a = enter(one.port());
  CHECK(one.wait_for_log("retrying until Redis answers"));
  Chatter b = enter(one.port());
  CHECK(a.client.read_line() == "Please welcome " + b.name + ", who just joined us");
  check_crosses(a, {&b}, "local for now");
  // Nicks stay unique in this process meanwhile, and are claimed on the bus once it answers.
  a.client.send("/nick solo\r\n");
  REQUIRE(a.client.read_line() == "You are now known as solo");
  REQUIRE(b.client.read_line() == a.name + " is now known as solo");
  b.client.send("/nick SOLO\r\n");
  CHECK(b.client.read_line() == "The nick solo is taken");

  Redis redis({}, port);
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url()));
  CHECK(one.wait_for_log("bus: connected to", 5s));
  Chatter c = enter(two.port());
  settle({&c, &a, &b}, 3);
  check_crosses(c, {&a, &b}, "now on the bus");
  c.client.send("/nick Solo\r\n");
  CHECK(c.client.read_line() == "The nick solo is taken");
}

namespace {

// Two network namespaces joined by a veth pair, with private addresses that exist only inside
// them; removed when destroyed. `ready` is false (with `why`) where they cannot be made.
class TwoMachines {
 public:
  TwoMachines() {
    if (::geteuid() != 0) {
      why_ = "not root";
      return;
    }
    const std::string tag = std::to_string(::getpid() % 100000);
    names_ = {"nsbus-a" + tag, "nsbus-b" + tag};
    const std::string veth_a = "vba" + tag, veth_b = "vbb" + tag;
    const std::vector<std::vector<std::string>> steps = {
        {"netns", "add", names_[0]},
        {"netns", "add", names_[1]},
        {"link", "add", veth_a, "netns", names_[0], "type", "veth", "peer", "name", veth_b, "netns", names_[1]},
        {"-n", names_[0], "addr", "add", "10.231.0.1/24", "dev", veth_a},
        {"-n", names_[1], "addr", "add", "10.231.0.2/24", "dev", veth_b},
        {"-n", names_[0], "link", "set", veth_a, "up"},
        {"-n", names_[1], "link", "set", veth_b, "up"},
        {"-n", names_[0], "link", "set", "lo", "up"},
        {"-n", names_[1], "link", "set", "lo", "up"},
    };
    for (const auto& step : steps) {
      const Outcome outcome = run("/usr/sbin/ip", step, 10s);
      if (outcome.status != 0) {
        why_ = "ip " + step[0] + " " + step[1] + " " + step[2] + ": " + outcome.output;
        return;
      }
    }
    ready_ = true;
  }
  ~TwoMachines() {
    for (const std::string& name : names_) run("/usr/sbin/ip", {"netns", "del", name}, 10s);
  }
  bool ready() const { return ready_; }
  const std::string& why() const { return why_; }
  std::vector<std::string> exec_in(int machine) const { return {"/usr/sbin/ip", "netns", "exec", names_[machine]}; }
  // A client socket made inside the namespace (a socket stays in the namespace it was made in).
  Client connect(int machine, int port) const {
    const int here = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    const int there = ::open(("/run/netns/" + names_[machine]).c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(::setns(there, CLONE_NEWNET) == 0);
    std::optional<Client> client;
    try {
      client.emplace(port);
    } catch (...) {
      ::setns(here, CLONE_NEWNET);
      throw;
    }
    ::setns(here, CLONE_NEWNET);
    ::close(here);
    ::close(there);
    return std::move(*client);
  }

 private:
  std::vector<std::string> names_;
  bool ready_ = false;
  std::string why_;
};

}  // namespace

TEST_CASE("a message crosses between two network namespaces", "[bus][netns]") {
  TwoMachines machines;
  if (!machines.ready()) {
    WARN("skipped: network namespaces cannot be made here (" << machines.why() << ")");
    return;
  }
  // Redis refuses other machines unless a password is set (protected mode): set one.
  Redis redis({"--requirepass", "between-machines"}, 0, machines.exec_in(0), "10.231.0.1");
  const std::string url = "redis://:between-machines@10.231.0.1:" + std::to_string(redis.port());
  ServerProcess one(binary("chat_server"), bus_yaml(url), Launch().with_wrapper(machines.exec_in(0)));
  ServerProcess two(binary("chat_server"), bus_yaml(url), Launch().with_wrapper(machines.exec_in(1)));
  auto enter_in = [&](int machine, int port) {
    Client client = machines.connect(machine, port);
    REQUIRE(client.read_line() == "Welcome, to the server!");
    REQUIRE(client.read_line());
    const std::string name = "127.0.0.1:" + std::to_string(client.local_port());
    return Chatter{std::move(client), name, -1};
  };
  Chatter a = enter_in(0, one.port());
  Chatter b = enter_in(1, two.port());
  settle({&a, &b}, 2);
  check_crosses(a, {&b}, "across machines");
  check_crosses(b, {&a}, "and back");
}

TEST_CASE("after a HUP the drainer's sessions stay in the room and in presence", "[bus]") {
  Redis redis;
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), "graceful_timeout: 10\n", "60"));
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url(), "", "60"));
  Chatter a = enter(one.port());
  Chatter b = enter(two.port());
  settle({&a, &b}, 2);
  a.client.send("/nick kept\r\n");
  REQUIRE(a.client.read_line() == "You are now known as kept");
  REQUIRE(b.client.read_line() == a.name + " is now known as kept");

  one.signal(SIGHUP);  // `a` stays with the old image; the new image, started beside it, serves newcomers
  REQUIRE(one.wait_for_log("(restarted)"));
  REQUIRE(one.wait_for_log(" keeps 1 session(s)"));
  const std::string drainer = std::to_string(one.pid());  // the first image keeps its pid and its sessions
  CHECK(one.wait_for_log("pid " + drainer + " keeps 1 session(s)"));
  const std::vector<pid_t> images = children_of(one.pid());
  REQUIRE(images.size() == 1);
  const long new_image = images.front();

  // The drainer still hears the room and still speaks in it, before and after the heartbeat.
  check_crosses(b, {&a}, "to the drainer");
  a.client.send("from the drainer\r\n");
  CHECK(b.client.read_line() == "Client kept said: from the drainer");
  Chatter c = enter(one.port());
  CHECK(c.pid == new_image);
  settle({&a, &b, &c}, 3);
  check_crosses(c, {&a, &b}, "from the new image");

  // /who: each member once, with the pid that serves it now: the drainer, the new image, two.
  std::vector<std::string> members = who(b);
  std::string shown;
  for (const std::string& member : members) shown += member + " | ";
  INFO("who: " << shown);
  REQUIRE(members.size() == 3);
  auto listed = [&](const std::string& start, const std::string& pid) {
    return std::count_if(members.begin(), members.end(),
                         [&](const std::string& m) { return m.find(start) == 2 && m.find("[pid " + pid + " on ") != std::string::npos; });
  };
  CHECK(listed("kept (" + a.name + ")", drainer) == 1);
  CHECK(listed(c.name, std::to_string(new_image)) == 1);
  CHECK(listed(b.name, std::to_string(two.pid())) == 1);

  // The drainer's last session leaves: its entry goes at once, and the drainer ends.
  a.client.send("bye\r\n");
  CHECK(b.client.read_line() == "Client kept said: bye");
  CHECK(b.client.read_line() == "Unfortunately kept left us");
  CHECK(eventually([&] { return who(b).size() == 2; }, 3s));
  CHECK(one.wait_for_log("pid " + drainer + " relays signals to pid " + std::to_string(new_image)));  // its work done
  CHECK(one.count_in_log("[error]") == 0);
}

TEST_CASE("a host name's addresses are tried in turn until Redis answers", "[bus]") {
  if (::geteuid() != 0) {
    WARN("skipped: a private /etc/hosts needs root (unshare --mount)");
    return;
  }
  // Redis on 127.0.0.2 only; the name's first address, 127.0.0.1, refuses the connection.
  Redis redis({}, 0, {}, "127.0.0.2");
  TempDir dir;
  const auto hosts = dir.write("hosts", "127.0.0.1 busredis.test\n127.0.0.2 busredis.test\n");
  const std::vector<std::string> private_hosts = {
      "/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
      "mount --bind " + hosts.string() + " /etc/hosts && exec \"$@\"", "sh"};
  const std::string url = "redis://busredis.test:" + std::to_string(redis.port());
  ServerProcess one(binary("chat_server"), bus_yaml(url), Launch().with_wrapper(private_hosts).with_args({"--log_level=4"}));
  ServerProcess two(binary("chat_server"), bus_yaml(url), Launch().with_wrapper(private_hosts));
  Chatter a = enter(one.port());
  Chatter b = enter(two.port());
  CHECK(one.wait_for_log("connect(127.0.0.1): Connection refused; trying 127.0.0.2"));
  CHECK(one.wait_for_log("bus: connected to " + url));
  settle({&a, &b}, 2);
  check_crosses(a, {&b}, "through the second address");
}

TEST_CASE("fork with a bus: each child exits when its session ends so max_servers never fills up", "[bus][fork][hardening]") {
  Redis redis;
  ServerProcess server(binary("chat_server"), bus_yaml(redis.url(), "personality: fork\nfork:\n  max_servers: 4\n"));
  for (int i = 0; i < 6; ++i) {  // more clients one after another than max_servers
    Chatter chatter = enter(server.port());
    REQUIRE(chatter.pid > 0);
    chatter.client.send("bye\r\n");
    CHECK(chatter.client.closed_by_peer());
    INFO("client " << i << "; children: " << children_of(server.pid()).size());
    CHECK(eventually([&] { return !alive(static_cast<pid_t>(chatter.pid)); }, 5s));  // the bus does not keep it
  }
  CHECK(server.stop(5s) == 0);
  CHECK(server.count_in_log("graceful_timeout") == 0);  // nobody left to kill at TERM
}

namespace {

// One command to `redis` in RESP, any bytes in any argument (redis-cli's arguments cannot hold
// a NUL); the first line of the reply.
std::string raw_command(const Redis& redis, const std::vector<std::string>& args) {
  std::string request = "*" + std::to_string(args.size()) + "\r\n";
  for (const std::string& arg : args) request += "$" + std::to_string(arg.size()) + "\r\n" + arg + "\r\n";
  Client client(redis.port());
  client.send(request);
  return client.read_line(5s).value_or("(no reply)");
}

// A well-formed envelope from a process that does not exist: what any program that can reach
// Redis could publish.
std::string forged(const std::string& payload, std::uint64_t session = 0) {
  return netserver::bus::Envelope{"forger:1:0000000000000000", session, 1, {}, payload}.encode();
}

// A presence entry for `field`, listed until long after the test.
void forge_presence(const Redis& redis, const std::string& field, const netserver::bus::PresenceRecord& record) {
  REQUIRE(raw_command(redis, {"HSET", "chat:presence:chat", field, record.encode()}) == ":1");
  REQUIRE(raw_command(redis, {"ZADD", "chat:presence-expiry:chat", "99999999999999", field}) == ":1");
}

}  // namespace

// Issue 19, defect 6: bytes from Redis reached every member byte for byte.
TEST_CASE("bus: what arrives from Redis passes the chat's rules again", "[bus][hardening]") {
  Redis redis;
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), "", "60"));
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url(), "", "60"));
  Chatter a = enter(one.port());
  Chatter b = enter(two.port());
  settle({&a, &b}, 2);
  // redis-cli's plain text is no envelope: never delivered.
  CHECK_THAT(redis.cli({"PUBLISH", "chat:room:chat", "Client alice said: plain text from redis-cli\r\n"}), Contains("2"));
  // Well-formed envelopes: a forged second line, an ANSI escape, a bidi override, a label no
  // member could have, a line without its end; then a real message to see what got through.
  for (const std::string& payload :
       {std::string("Client alice said: hi\r\nClient bob said: owned\r\n"), std::string("\x1b[2JClient alice said: x\r\n"),
        std::string("Client al\xe2\x80\xaeice said: x\r\n"), std::string("Client \x1b[1mroot said: x\r\n"),
        std::string("Client alice said: \x1b]0;title\x07 \xe2\x80\xae" "desrever\r\n"), std::string("no line end"),
        std::string("Unfortunately alice\xe3\x85\xa4 left us\r\n"), std::string("Please welcome [::1]:5, who just joined us\r\n")})
    REQUIRE(raw_command(redis, {"PUBLISH", "chat:room:chat", forged(payload)}) == ":2");
  a.client.send("the real one\r\n");
  const std::vector<std::string> relayed{"Client alice said: hi\\x0d\\x0aClient bob said: owned",
                                         "Client alice said: \\x1b]0;title\\x07 \\u202edesrever",
                                         "Please welcome [::1]:5, who just joined us"};
  std::vector<std::string> to_b;
  while (auto line = b.client.read_line(3s)) {
    to_b.push_back(*line);
    if (line->ends_with("the real one")) break;
  }
  std::vector<std::string> expected = relayed;
  expected.push_back("Client " + a.name + " said: the real one");
  CHECK(to_b == expected);
  std::vector<std::string> to_a;
  while (auto line = a.client.read_line(1s)) to_a.push_back(*line);
  CHECK(to_a == relayed);
  CHECK(one.wait_for_log("bus: dropped 1 message(s) from Redis"));  // the first at once: redis-cli's text
  CHECK(one.count_in_log("bus: dropped ") == 1);                      // the next ones within the minute counted only

  // Forged presence and names entries: a label no member could have is not listed, an address
  // and host are escaped, a holder's invalid label is not repeated in "taken".
  forge_presence(redis, "forger:1:0/1", {4242, "evil", "127.0.0.1:1", "\x1b[31mroot\r\nfake line", {}});
  forge_presence(redis, "forger:1:0/2", {4242, "evil\x1bhost", "127.0.0.1:2\r\n", "mallory", {}});
  REQUIRE(raw_command(redis, {"HSET", "chat:names:chat", chat::nick_key("zed"), "forger:1:0/1"}) == ":1");
  const std::vector<std::string> members = who(a);
  std::string shown;
  for (const std::string& member : members) shown += member + " | ";
  INFO("who: " << shown);
  REQUIRE(members.size() == 3);  // a, b, mallory
  CHECK(std::count_if(members.begin(), members.end(), [](const std::string& m) {
          return m.starts_with("  mallory (127.0.0.1:2\\x0d\\x0a) [pid 4242 on evil\\x1bhost]");
        }) == 1);
  CHECK_THAT(shown, !Contains("root") && !Contains("\x1b"));
  CHECK(a.client.read_line() == "(1 entry(ies) of the room's presence list with an invalid name not shown)");
  a.client.send("/nick zed\r\n");
  CHECK(a.client.read_line() == "The nick zed is taken");
}

// Issue 19, defect 6: with bus_secret only a program holding the key speaks in the room.
TEST_CASE("bus: with bus_secret untagged messages and presence entries are dropped and logged", "[bus][hardening][secret]") {
  const std::string secret = "0123456789abcdef-the-shared-key";
  Redis redis;
  TempDir dir;
  const auto key_file = dir.write("bus.key", secret + "\n");
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), "bus_secret: " + secret + "\n", "60"));
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url(), "bus_secret_file: " + key_file.string() + "\n", "60"));
  ServerProcess keyless(binary("chat_server"), bus_yaml(redis.url(), "", "60"));
  Chatter a = enter(one.port());
  Chatter b = enter(two.port());
  Chatter c = enter(keyless.port());
  settle({&a, &b}, 2);  // c's presence entry has no tag: not listed
  check_crosses(a, {&b}, "signed");
  // A forged envelope, and the keyless process's own message: neither reaches a or b.
  REQUIRE(raw_command(redis, {"PUBLISH", "chat:room:chat", forged("Client alice said: unsigned\r\n")}) == ":3");
  c.client.send("from a process without the key\r\n");
  forge_presence(redis, "forger:1:0/1", {4242, "evil", "127.0.0.1:1", "mallory", {}});
  CHECK(who(a).size() == 2);
  check_crosses(b, {&a}, "still signed");
  CHECK(a.client.silent_for(0.3s));
  CHECK(b.client.silent_for(0.3s));
  CHECK(one.wait_for_log("without a valid bus_secret tag"));
  CHECK(two.wait_for_log("without a valid bus_secret tag"));
  CHECK(one.count_in_log("bus: dropped ") == 1);  // logged once a minute, not once per message
  for (const ServerProcess* server : {&one, &two}) CHECK_THAT(server->log(), !Contains(secret));

  // Never printed by --check-config, or in an error; a short key and a missing file are refused.
  const Outcome shown = run(binary("chat_server"), {"--check-config", "--bus=" + redis.url(), "--bus_secret=" + secret});
  CHECK(shown.status == 0);
  CHECK_THAT(shown.output, Contains("bus_secret: \"***\"") && Contains("--bus_secret=***") && !Contains(secret));
  const Outcome from_file = run(binary("chat_server"), {"--check-config", "--bus=" + redis.url(), "--bus_secret_file=" + key_file.string()});
  CHECK(from_file.status == 0);
  CHECK_THAT(from_file.output, !Contains(secret));
  const Outcome short_key = run(binary("chat_server"), {"--check-config", "--bus=" + redis.url(), "--bus_secret=tooshort-7"});
  CHECK(short_key.status == 2);
  CHECK_THAT(short_key.output, Contains("at least 16 bytes") && !Contains("tooshort-7"));
  const Outcome missing = run(binary("chat_server"), {"--check-config", "--bus=" + redis.url(),
                                                      "--bus_secret_file=" + (dir.path() / "none").string()});
  CHECK(missing.status == 2);
  CHECK_THAT(missing.output, Contains("cannot read the bus secret file"));
  const Outcome both = run(binary("chat_server"), {"--check-config", "--bus=" + redis.url(), "--bus_secret=" + secret,
                                                   "--bus_secret_file=" + key_file.string()});
  CHECK(both.status == 2);
  CHECK_THAT(both.output, Contains("give the bus secret once") && !Contains(secret));
  const Outcome mistyped = run(binary("chat_server"), {"--check-config", "--bus_secrte=" + secret});
  CHECK(mistyped.status == 2);
  CHECK_THAT(mistyped.output, Contains("--bus_secrte=***") && !Contains(secret));
}

// Issue 19, defect 7: at maxmemory the claim is refused by Redis and was granted anyway.
TEST_CASE("bus: a nick claim Redis refuses is refused on every server", "[bus][hardening]") {
  Redis redis;
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), "", "60"));
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url(), "", "60"));
  Chatter a = enter(one.port());
  Chatter b = enter(two.port());
  settle({&a, &b}, 2);
  CHECK_THAT(redis.cli({"CONFIG", "SET", "maxmemory-policy", "noeviction"}), Contains("OK"));
  CHECK_THAT(redis.cli({"CONFIG", "SET", "maxmemory", "1"}), Contains("OK"));
  const std::string refused = " cannot be claimed now: the room's name registry refused it; try again later";
  a.client.send("/nick carol\r\n");
  CHECK(a.client.read_line() == "The nick carol" + refused);
  b.client.send("/nick Carol\r\n");
  CHECK(b.client.read_line() == "The nick Carol" + refused);
  CHECK(one.wait_for_log("refused by Redis: OOM"));
  CHECK(two.wait_for_log("refused by Redis: OOM"));
  check_crosses(a, {&b}, "publishing still works at maxmemory");  // PUBLISH is not refused for memory
  CHECK_THAT(redis.cli({"CONFIG", "SET", "maxmemory", "0"}), Contains("OK"));
  a.client.send("/nick carol\r\n");
  CHECK(a.client.read_line() == "You are now known as carol");
  CHECK(b.client.read_line() == a.name + " is now known as carol");
  b.client.send("/nick Carol\r\n");
  CHECK(b.client.read_line() == "The nick carol is taken");
  CHECK_THAT(redis.cli({"HKEYS", "chat:names:chat"}), Contains(chat::nick_key("carol")));
}

// Issue 19, defect 15: during an undetected stall nothing reached anyone, uncounted.
TEST_CASE("bus: a stalled Redis: own messages are delivered here at once and counted as maybe lost", "[bus][hardening]") {
  Redis redis;
  // A probe every 3 s: the stall goes unnoticed for 3 to 6 s, the grace for own messages is 1 s.
  const Launch slow_probe = Launch().with_args({"--bus_probe_interval=3"});
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), "", "60"), slow_probe);
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url(), "", "60"), slow_probe);
  Chatter a = enter(one.port());
  Chatter b = enter(one.port());
  Chatter c = enter(two.port());
  settle({&a, &b, &c}, 3);
  check_crosses(a, {&b, &c}, "before the stall");

  redis.signal(SIGSTOP);
  const auto stopped = std::chrono::steady_clock::now();
  a.client.send("during the stall\r\n");
  CHECK(b.client.read_line(1.8s) == "Client " + a.name + " said: during the stall");  // not waiting for the probe
  CHECK(one.wait_for_log("Redis has not echoed this process's messages", 1s));
  a.client.send("still stalled\r\n");
  CHECK(b.client.read_line(0.5s) == "Client " + a.name + " said: still stalled");  // at once now
  CHECK(std::chrono::steady_clock::now() - stopped < 3s);  // both before the probe could notice
  REQUIRE(one.wait_for_log("silent: a liveness probe", 8s));
  CHECK(one.wait_for_log("2 message(s) published since Redis last answered may not have reached the other processes"));
  std::this_thread::sleep_for(0.5s);
  redis.signal(SIGCONT);
  CHECK(one.wait_for_log("bus: reconnected", 10s));
  CHECK(one.wait_for_log("and 2 published before the outage was noticed may be lost"));
  CHECK(b.client.silent_for(0.5s));  // never twice
  settle({&a, &b, &c}, 3);
  check_crosses(a, {&b, &c}, "after the stall");
}

// A claim whose reply never comes (Redis stopped after it was sent) is decided once the bus is
// found down, as a down bus decides: by this process's members. It was never answered.
TEST_CASE("bus: a nick claim in flight when Redis stalls is answered once the bus is down", "[bus][hardening]") {
  Redis redis;
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), "", "60"));
  Chatter a = enter(one.port());
  Chatter b = enter(one.port());
  settle({&a, &b}, 2);
  redis.signal(SIGSTOP);
  a.client.send("/nick dave\r\n");
  CHECK(a.client.read_line(5s) == "You are now known as dave");
  CHECK(one.wait_for_log("silent: a liveness probe"));
  CHECK(b.client.read_line() == a.name + " is now known as dave");
  b.client.send("/nick DAVE\r\n");
  CHECK(b.client.read_line() == "The nick dave is taken");
  redis.signal(SIGCONT);
  CHECK(one.wait_for_log("bus: reconnected", 10s));
}

TEST_CASE("the bus on /metrics: up and down and reconnected and its messages counted", "[bus][metrics]") {
  Redis redis;
  ServerProcess server(binary("chat_server"), bus_yaml(redis.url(), "status:\n  listen: [\"127.0.0.1:" +
                                                                        std::to_string(free_port()) + "\"]\n"));
  const int status = metrics_checks::status_port(server);
  const auto scrape = [&] {
    return metrics_checks::samples_of(metrics_checks::curl(metrics_checks::url(status, "/metrics")).body);
  };
  const auto value = [&](const std::string& series) { return metrics_checks::sample(scrape(), series); };
  Chatter a = enter(server.port());
  Chatter b = enter(server.port());
  settle({&a, &b}, 2);
  CHECK(eventually([&] { return value("netserver_bus_up") == 1; }));
  const double published = value("netserver_bus_published_total");
  const double received = value("netserver_bus_received_total");
  CHECK(published > 0);  // the joins were announced over the bus
  check_crosses(a, {&b}, "counted");
  CHECK(eventually([&] { return value("netserver_bus_published_total") == published + 1; }));
  CHECK(eventually([&] { return value("netserver_bus_received_total") == received + 1; }));  // its own, back
  redis.kill();
  REQUIRE(server.wait_for_log("serving this process's clients only", 5s));
  CHECK(eventually([&] { return value("netserver_bus_up") == 0; }));
  redis.start();
  REQUIRE(server.wait_for_log("bus: reconnected", 5s));
  CHECK(eventually([&] { return value("netserver_bus_up") == 1 && value("netserver_bus_reconnects_total") == 1; }));
}

TEST_CASE("over the bus a flooder is held by the slow members of its own process", "[bus][fanout]") {
  // Issue 26's scenario with every client in one process on the bus, at the default max_output:
  // the members' hold comes a round trip through Redis late, and the publish window keeps the
  // flooder from running ahead meanwhile (docs/bus.md, "Backpressure across processes").
  Redis redis;
  ServerProcess server(binary("chat_server"),
                       bus_yaml(redis.url(), "personality: multiplex\n" + fanout_stall_yaml()));
  check_fanout(run_fanout(server, true), fanout_stall_seconds);  // R waits for F's welcome: the room is subscribed
}

TEST_CASE("over the bus a member in another process cannot hold the flooder and is cut by its own bounds",
          "[bus][fanout]") {
  // S is served by another process than F and R: nothing of S's queue reaches F's process, so F
  // runs at R's pace and S -- which stopped reading -- is cut by its process's bounds
  // (output_stall_timeout, max_output), its memory bounded.
  Redis redis;
  const std::string more = "personality: multiplex\n" + fanout_stall_yaml();
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url(), more));
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), more));
  auto s = fanout_detail::connect(two);
  auto r = fanout_detail::connect(one);
  auto f = fanout_detail::connect(one);
  REQUIRE(s.pid != f.pid);
  FanoutTrio trio{std::move(s), std::move(r), std::move(f), &two, &one};
  const FanoutOutcome outcome = flood(trio, true);
  INFO(outcome.first_wrong);
  CHECK(outcome.first_wrong.empty());
  CHECK(outcome.received == 20000);
  CHECK(one.log().find("disconnecting ") == std::string::npos);  // nobody of F's process was cut
  CHECK(two.log().find("disconnecting " + outcome.s_name + " (session ") != std::string::npos);
  INFO("largest RSS " << outcome.max_rss_kib << " KiB");
  if (fanout_checks_memory) CHECK(outcome.max_rss_kib < 96 * 1024);
}

// --- Sentinel failover (issue 24) --------------------------------------------------------------

TEST_CASE("a malformed redis-sentinel address is a config error naming file line and column", "[bus][sentinel]") {
  TempDir dir;
  const auto config = dir.write("chat.yaml", "port: 0\nbus: redis-sentinel://127.0.0.1:26379\n");
  const Outcome bad = run(binary("chat_server"), {"--config", config.string()});
  CHECK(bad.status == 2);
  CHECK_THAT(bad.output, Contains("chat.yaml:2:6") && Contains("the master's name is missing"));
  CHECK_THAT(bad.output, !Contains("listening on"));
  for (const auto& [url, problem] : std::vector<std::pair<std::string, std::string>>{
           {"redis-sentinel://:hunter2@127.0.0.1:26379,,127.0.0.1:26380/mymaster", "an empty Sentinel between commas"},
           {"redis-sentinel://:hunter2@127.0.0.1:26379/", "the master's name after '/' is empty"},
           {"redis-sentinel://:hunter2@/mymaster", "no Sentinel is given"},
           {"redis-sentinel://:hunter2@127.0.0.1/mymaster", "Sentinel '127.0.0.1': the port is missing"},
           {"redis-sentinel://:hunter2@127.0.0.1:26379,127.0.0.1:0/mymaster", "Sentinel '127.0.0.1:0': the port must be"},
           {"redis-sentinel://:hunter2@127.0.0.1:26379/my master", "'my master' is not a master name"},
           {"redis-sentinel://user:hunter2@127.0.0.1:26379/mymaster", "a user name is not supported"}}) {
    const Outcome wrong = run(binary("chat_server"), {"--port=0", "--bus=" + url});
    CHECK(wrong.status == 2);
    CHECK_THAT(wrong.output, Contains("--bus=") && Contains(problem) && Contains("redis-sentinel://:***@") && !Contains("hunter2"));
  }
  // The Sentinels' password: only with Sentinels, and never shown.
  CHECK(run(binary("chat_server"), {"--port=0", "--bus=redis://127.0.0.1:6379", "--bus_sentinel_password=x"}).status == 2);
  const Outcome shown = run(binary("chat_server"), {"--check-config", "--bus=redis-sentinel://:hunter2@127.0.0.1:26379,[::1]:26380/m",
                                                     "--bus_sentinel_password=sentinel-secret"});
  CHECK(shown.status == 0);
  CHECK_THAT(shown.output, Contains("redis-sentinel://:***@127.0.0.1:26379,[::1]:26380/m") && Contains("bus_sentinel_password") &&
                               !Contains("hunter2") && !Contains("sentinel-secret"));
}

namespace {

const std::string room_channel = "chat:room:chat";

// Every process serving one of `chatters` listens to the room on node `master` of `set` and none
// on the other node (a dead node counts as none): they all followed the failover.
bool all_follow(const RedisSet& set, int master, const std::vector<Chatter*>& chatters) {
  std::set<long> pids;
  for (const Chatter* chatter : chatters) pids.insert(chatter->pid);
  const int other = set.subscribers(1 - master, room_channel);
  return set.subscribers(master, room_channel) == static_cast<int>(pids.size()) && other <= 0;
}

// Reads what `chatter` receives until it is quiet for `quiet`.
std::vector<std::string> drain(Chatter& chatter, Seconds quiet = 1s) {
  std::vector<std::string> lines;
  while (auto line = chatter.client.read_line(quiet)) lines.push_back(*line);
  return lines;
}

const std::string workers_block = "personality: multiplex\nmultiplex:\n  workers: 2\n";

}  // namespace

TEST_CASE("an unreachable Sentinel set is waited for while serving locally", "[bus][sentinel][failover]") {
  const std::vector<int> ports{free_port(), free_port(), free_port()};
  std::string url = "redis-sentinel://";
  for (int port : ports) url += "127.0.0.1:" + std::to_string(port) + (port == ports.back() ? "" : ",");
  url += std::string("/") + RedisSet::name;
  ServerProcess server(binary("chat_server"), bus_yaml(url));
  ServerProcess other(binary("chat_server"), bus_yaml(url, prefork_block));
  Chatter a = enter(server.port());
  Chatter b = enter(server.port());
  CHECK(server.wait_for_log("no Sentinel of " + url + " named the master"));
  CHECK(eventually([&] { return server.count_in_log("no Sentinel of") >= 3; }, 10s));  // it keeps trying
  drain(a, 0.5s);  // the join announcements, in whichever order the sessions were let in
  drain(b, 0.5s);
  check_crosses(a, {&b}, "locally meanwhile");
  RedisSet set("", "", ports);
  CHECK(server.wait_for_log("bus: connected to " + url + " (master redis://127.0.0.1:" + std::to_string(set.node(0).port()) + ")"));
  Chatter c = enter(other.port());
  settle({&a, &b, &c}, 3);
  check_crosses(c, {&a, &b}, "through the master the Sentinels named");
}

TEST_CASE("SENTINEL FAILOVER mid-chat: every process follows and the chat goes on in one order", "[bus][sentinel][failover]") {
  RedisSet set("master-secret", "sentinel-secret");
  const std::string sentinel = "bus_sentinel_password: sentinel-secret\n";
  ServerProcess multiplex(binary("chat_server"), bus_yaml(set.url(), sentinel + workers_block));
  ServerProcess prefork(binary("chat_server"), bus_yaml(set.url(), sentinel + prefork_block));
  std::vector<Chatter> chatters;
  for (int i = 0; i < 4; ++i) chatters.push_back(enter(i % 2 ? prefork.port() : multiplex.port()));
  std::vector<Chatter*> all;
  for (Chatter& chatter : chatters) all.push_back(&chatter);
  settle(all, 4);
  REQUIRE(all_follow(set, 0, all));
  check_one_order(all, 3);

  // Mid-chat: lines go out while the Sentinels switch the master over.
  CHECK_THAT(set.sentinel_cli(1, {"SENTINEL", "FAILOVER", RedisSet::name}), Contains("OK"));
  constexpr int during = 30;
  for (int i = 0; i < during; ++i) {
    all[i % all.size()]->client.send("during-" + std::to_string(i) + "\r\n");
    std::this_thread::sleep_for(50ms);
  }
  REQUIRE(eventually([&] { return set.promoted(1); }, 20s));
  REQUIRE(eventually([&] { return all_follow(set, 1, all); }, 20s));
  // What was said during the switch reached each member at most once (pub/sub may lose what the
  // old master took after the others left it; the processes count it in their logs).
  std::size_t heard = 0;
  for (Chatter* chatter : all) {
    std::map<std::string, int> times;
    for (const std::string& line : drain(*chatter))
      if (line.find(" said: during-") != std::string::npos) ++times[line];
    for (const auto& [line, count] : times) CHECK(count == 1);
    heard += times.size();
  }
  std::cerr << "SENTINEL FAILOVER: " << heard << " of " << during * (all.size() - 1)
            << " deliveries of the lines sent during the switch arrived\n";
  CHECK(multiplex.wait_for_log("bus: reconnected to " + set.url().substr(0, 17)));
  CHECK(prefork.wait_for_log("bus: reconnected to "));
  // After the switch: every line reaches every other member exactly once, in one order.
  settle(all, 4);
  check_one_order(all, 4);
  CHECK_THAT(multiplex.log() + prefork.log(), !Contains("master-secret") && !Contains("sentinel-secret"));
  CHECK(multiplex.count_in_log("closed 127.0.0.1") == 0);  // no session lost
  CHECK(prefork.count_in_log("closed 127.0.0.1") == 0);
}

TEST_CASE("the Sentinel watched for +switch-master killed: the watch moves to the next one and follows a failover",
          "[bus][sentinel][failover]") {
  RedisSet set;
  ServerProcess server(binary("chat_server"), bus_yaml(set.url()));
  ServerProcess other(binary("chat_server"), bus_yaml(set.url()));
  Chatter a = enter(server.port());
  Chatter b = enter(other.port());
  settle({&a, &b}, 2);
  set.sentinel(0).kill();  // the first named, so the one both processes asked and watch
  CHECK(server.wait_for_log("failovers are noticed when the master stops answering until a Sentinel answers"));
  CHECK(server.wait_for_log("watching for failovers through the Sentinels again"));
  CHECK(other.wait_for_log("watching for failovers through the Sentinels again"));
  CHECK_THAT(set.sentinel_cli(1, {"SENTINEL", "FAILOVER", RedisSet::name}), Contains("OK"));
  REQUIRE(eventually([&] { return set.promoted(1); }, 20s));
  CHECK(server.wait_for_log("(+switch-master)"));  // heard on the new watch
  CHECK(other.wait_for_log("(+switch-master)"));
  REQUIRE(eventually([&] { return all_follow(set, 1, {&a, &b}); }, 20s));
  settle({&a, &b}, 2);
  check_crosses(a, {&b}, "watched anew");
  check_crosses(b, {&a}, "and back");
}

// --- bus_history (issue 24) ----------------------------------------------------------------------

namespace {

// The lines of `lines` that `speaker` said, in the order received.
std::vector<std::string> said_by(const std::vector<std::string>& lines, const Chatter& speaker) {
  std::vector<std::string> kept;
  const std::string mark = "Client " + speaker.name + " said: ";
  for (const std::string& line : lines)
    if (line.rfind(mark, 0) == 0) kept.push_back(line.substr(mark.size()));
  return kept;
}

}  // namespace

TEST_CASE("bus_history: Redis stopped 10 s: what was said meanwhile arrives after SIGCONT in order exactly once",
          "[bus][history][failover]") {
  Redis redis;
  const std::string history = "bus_history: 1000\n";
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), history));
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url(), history + prefork_block));
  Chatter a = enter(one.port());
  Chatter b = enter(one.port());
  Chatter c = enter(two.port());
  settle({&a, &b, &c}, 3);
  check_crosses(a, {&b, &c}, "before the stop");
  check_crosses(c, {&a, &b}, "before the stop too");

  redis.signal(SIGSTOP);
  std::vector<std::string> said;
  for (int i = 0; i < 10; ++i) {  // one line each a second, for 10 s
    said.push_back("stopped-" + std::to_string(i));
    a.client.send(said.back() + "\r\n");
    c.client.send(said.back() + "\r\n");
    std::this_thread::sleep_for(1s);
  }
  CHECK(one.count_in_log("silent: a liveness probe") >= 1);
  CHECK(two.count_in_log("silent: a liveness probe") >= 1);
  redis.signal(SIGCONT);
  CHECK(one.wait_for_log("bus: reconnected", 10s));
  CHECK(two.wait_for_log("bus: reconnected", 10s));
  const std::vector<std::string> heard_a = drain(a, 2s), heard_b = drain(b, 2s), heard_c = drain(c, 2s);
  CHECK(said_by(heard_c, a) == said);  // across processes: after SIGCONT, in order, once each
  CHECK(said_by(heard_a, c) == said);
  CHECK(said_by(heard_b, c) == said);
  CHECK(said_by(heard_b, a) == said);  // in a's process: at once (local delivery never waits), and not again
  CHECK(one.wait_for_log("message(s) kept while Redis did not answer"));
  settle({&a, &b, &c}, 3);
  check_one_order({&a, &b, &c}, 3);
  CHECK_THAT(redis.cli({"XLEN", "chat:history:chat"}), !Contains("(integer) 0"));
}

namespace {

// The master of a Redis set SIGKILLed while a (Multiplex) speaks every 100 ms: the Sentinels
// promote the replica, every process follows, the chat resumes. Without bus_history what a said
// meanwhile reached its own process only (counted); with it, c (PreFork) gets every line once,
// in order. Prints the time from SIGKILL to the first line crossing processes.
void master_killed_mid_chat(bool history) {
  RedisSet set;
  const std::string more = history ? "bus_history: 1000\n" : "";
  ServerProcess multiplex(binary("chat_server"), bus_yaml(set.url(), more));
  ServerProcess prefork(binary("chat_server"), bus_yaml(set.url(), more + prefork_block));
  Chatter a = enter(multiplex.port());
  Chatter b = enter(multiplex.port());
  Chatter c = enter(prefork.port());
  Chatter d = enter(prefork.port());
  std::vector<Chatter*> all{&a, &b, &c, &d};
  settle(all, 4);
  check_one_order(all, 2);

  const auto killed = std::chrono::steady_clock::now();
  set.node(0).kill();
  std::vector<std::string> said, heard_c;
  while (said_by(heard_c, a).empty() && std::chrono::steady_clock::now() - killed < 30s) {
    said.push_back("after-kill-" + std::to_string(said.size()));
    a.client.send(said.back() + "\r\n");
    while (auto line = c.client.read_line(0.1s)) heard_c.push_back(*line);
  }
  REQUIRE(!said_by(heard_c, a).empty());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  std::cerr << "SIGKILL to first delivery across processes" << (history ? " (bus_history)" : "") << ": " << seconds << " s ("
            << said.size() << " lines sent)\n";
  REQUIRE(set.master() == 1);
  REQUIRE(eventually([&] { return all_follow(set, 1, all); }, 20s));
  for (const std::string& line : drain(c, 1s)) heard_c.push_back(line);
  for (Chatter* chatter : {&a, &b, &d}) drain(*chatter, 0.5s);
  if (history) {
    CHECK(said_by(heard_c, a) == said);  // every line, once, in order
    CHECK(multiplex.wait_for_log("message(s) kept while Redis did not answer"));
  } else {
    CHECK(said_by(heard_c, a).size() < said.size());  // at most once: what was said meanwhile stayed in a's process
    CHECK(multiplex.wait_for_log("message(s) reached only this process meanwhile"));  // and was counted
  }
  CHECK(multiplex.wait_for_log("bus: reconnected to " + set.url() + " (master redis://127.0.0.1:" +
                               std::to_string(set.node(1).port()) + ")"));
  CHECK(prefork.wait_for_log("bus: reconnected to "));
  settle(all, 4);
  check_one_order(all, 3);
  CHECK(multiplex.count_in_log("closed 127.0.0.1") == 0);
  CHECK(prefork.count_in_log("closed 127.0.0.1") == 0);
}

}  // namespace

TEST_CASE("the master SIGKILLed mid-chat: the Sentinels promote the replica and every process follows", "[bus][sentinel][failover]") {
  master_killed_mid_chat(false);
}

TEST_CASE("bus_history: the master SIGKILLed mid-chat: what was said meanwhile arrives once in order",
          "[bus][sentinel][history][failover]") {
  master_killed_mid_chat(true);
}

TEST_CASE("bus_history: Redis restarted with AOF: the history survives and nothing is delivered twice",
          "[bus][history][failover]") {
  Redis redis({"--appendonly", "yes", "--appendfsync", "always"});
  const std::string history = "bus_history: 1000\n";
  ServerProcess one(binary("chat_server"), bus_yaml(redis.url(), history));
  ServerProcess two(binary("chat_server"), bus_yaml(redis.url(), history + prefork_block));
  Chatter a = enter(one.port());
  Chatter c = enter(two.port());
  settle({&a, &c}, 2);
  for (const std::string text : {"before-0", "before-1", "before-2"}) check_crosses(a, {&c}, text);

  redis.kill();
  REQUIRE(one.wait_for_log("serving this process's clients only", 5s));
  REQUIRE(two.wait_for_log("serving this process's clients only", 5s));
  const std::vector<std::string> said{"while-down-0", "while-down-1", "while-down-2"};
  for (const std::string& text : said) a.client.send(text + "\r\n");
  std::this_thread::sleep_for(0.5s);
  redis.start();  // the same directory: the append-only file is read back
  CHECK(one.wait_for_log("bus: reconnected", 10s));
  CHECK(two.wait_for_log("bus: reconnected", 10s));
  CHECK(said_by(drain(c, 2s), a) == said);  // what was said while down, once; what was heard before, not again
  const std::string stream = redis.cli({"XRANGE", "chat:history:chat", "-", "+"});
  CHECK_THAT(stream, Contains("before-0") && Contains("before-2") && Contains("while-down-2"));
  settle({&a, &c}, 2);
  check_one_order({&a, &c}, 3);
}
