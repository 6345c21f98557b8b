// Access control against the real server: allow/deny regexes and CIDR rules for IPv4 and IPv6
// peers (127.0.0.2 and friends stand in for other hosts), unix clients, and the denied path.

#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

// True when a client from `source` gets the probe's banner; false when it is closed unserved.
bool served(int port, const std::string& host, const std::string& source) {
  Client client(port, host, source);
  const auto line = client.read_line(3s);
  if (!line) return false;
  return line->starts_with("probe ready");
}

ServerProcess probe(const std::string& rules) {
  return ServerProcess(binary("probe_server"),
                       "personality: multiplex\nlog_level: 3\nlisten: [\"127.0.0.1:0\", \"[::1]:0\"]\n" + rules);
}

}  // namespace

TEST_CASE("deny regexes refuse matching IPv4 peers and allow rules admit the rest", "[access]") {
  ServerProcess server = probe("deny: ['127\\.0\\.0\\.2']\nallow: ['127\\..*']\n");
  CHECK(served(server.port(), "127.0.0.1", "127.0.0.1"));
  CHECK_FALSE(served(server.port(), "127.0.0.1", "127.0.0.2"));
  CHECK(served(server.port(), "127.0.0.1", "127.0.0.3"));
  CHECK(server.wait_for_log("refused 127.0.0.2:"));
  CHECK(server.wait_for_log("hook request_denied_hook 127.0.0.2:"));
}

TEST_CASE("with allow rules only the peers they match get in", "[access]") {
  ServerProcess server = probe("allow: ['127\\.0\\.0\\.1']\ncidr_allow: ['127.0.0.8/29', '::1/128']\n");
  CHECK(served(server.port(), "127.0.0.1", "127.0.0.1"));
  CHECK_FALSE(served(server.port(), "127.0.0.1", "127.0.0.2"));
  CHECK(served(server.port(), "127.0.0.1", "127.0.0.9"));
  CHECK_FALSE(served(server.port(), "127.0.0.1", "127.0.0.16"));
  CHECK(served(server.port_of("[::1]"), "::1", "::1"));
}

TEST_CASE("cidr_deny refuses IPv6 and IPv4 networks and deny wins over allow", "[access]") {
  ServerProcess server = probe("cidr_deny: ['::1/128', '127.0.0.4/30']\ncidr_allow: ['127.0.0.0/8']\n");
  CHECK_FALSE(served(server.port_of("[::1]"), "::1", "::1"));
  CHECK(served(server.port(), "127.0.0.1", "127.0.0.1"));
  CHECK_FALSE(served(server.port(), "127.0.0.1", "127.0.0.5"));
  CHECK(served(server.port(), "127.0.0.1", "127.0.0.8"));
  CHECK(server.wait_for_log("refused [::1]:"));
}

TEST_CASE("unix-socket clients are always allowed", "[access]") {
  TempDir dir;
  const std::string path = (dir.path() / "p.sock").string();
  ServerProcess server(binary("probe_server"), "personality: multiplex\nlisten: [\"127.0.0.1:0\", \"unix:" + path +
                                                   "\"]\nallow: ['10\\.9\\.9\\.9']\n");
  Client client = Client::unix_socket(path);
  const auto line = client.read_line();
  REQUIRE(line);
  CHECK_THAT(*line, Contains("probe ready"));
  CHECK_FALSE(served(server.port(), "127.0.0.1", "127.0.0.1"));
}

TEST_CASE("as in Net::Server once any rule is set a peer must match an allow rule", "[access]") {
  ServerProcess server = probe("cidr_deny: ['127.0.0.2']\n");
  CHECK(server.wait_for_log("only deny rules are set"));
  CHECK_FALSE(served(server.port(), "127.0.0.1", "127.0.0.1"));
  CHECK_FALSE(served(server.port(), "127.0.0.1", "127.0.0.2"));
}

TEST_CASE("access rules apply under every personality", "[access]") {
  const std::string personality = GENERATE("single", "prefork");
  ServerProcess server(binary("probe_server"), "personality: " + personality +
                                                   "\nhost: 127.0.0.1\nport: 0\ncidr_deny: ['127.0.0.2']\n"
                                                   "cidr_allow: ['127.0.0.0/8']\n");
  CHECK_FALSE(served(server.port(), "127.0.0.1", "127.0.0.2"));
  CHECK(served(server.port(), "127.0.0.1", "127.0.0.1"));
}

TEST_CASE("a bad rule is a configuration error with its position", "[access][config]") {
  TempDir dir;
  const auto file = dir.write("bad.yaml", "cidr_allow:\n  - 10.0.0.0/40\n").string();
  const Outcome outcome = run(binary("echo_server"), {"--config", file});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains(file + ":2:3: cidr_allow: \"10.0.0.0/40\": the prefix length must be 0 to 32"));
  const Outcome regex = run(binary("echo_server"), {"--deny=(unclosed"});
  CHECK(regex.status == 2);
  CHECK_THAT(regex.output, Contains("is not a valid regular expression"));
}

TEST_CASE("cidr_allow takes an IPv4-mapped network with its IPv6 prefix length", "[access][hardening]") {
  ServerProcess server(binary("probe_server"), "personality: multiplex\nlog_level: 3\nlisten: [\"127.0.0.1:0\"]\n",
                       Launch().with_args({"--cidr_allow=::ffff:127.0.0.0/126"}));  // 127.0.0.0 to .3
  CHECK(served(server.port(), "127.0.0.1", "127.0.0.1"));
  CHECK(served(server.port(), "127.0.0.1", "127.0.0.3"));
  CHECK_FALSE(served(server.port(), "127.0.0.1", "127.0.0.4"));
}

TEST_CASE("an allow pattern that backtracks without bound refuses its peers and logs it once", "[access][hardening]") {
  // std::regex took exponential time here, in the event loop, for every client.
  ServerProcess server = probe("allow: ['(.*.*)*x', '127\\.0\\.0\\.3']\n");
  CHECK_FALSE(served(server.port(), "127.0.0.1", "127.0.0.1"));
  CHECK_FALSE(served(server.port(), "127.0.0.1", "127.0.0.2"));
  CHECK(served(server.port(), "127.0.0.1", "127.0.0.3"));  // and the server goes on serving
  CHECK(server.wait_for_log("backtracks without bound"));
  CHECK(server.count_in_log("backtracks without bound") == 1);
}
