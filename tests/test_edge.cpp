// The edge through the real binaries: a real HAProxy (tests/support/haproxy.*) sending PROXY v1
// and v2 headers in front of probe_server, chat_server and echo_server under each personality,
// clients from 127.0.0.2 and 127.0.0.3; bad headers, untrusted senders, the per-address limits
// and the configuration checks.

#include <sys/socket.h>
#include <sys/time.h>

#include <csignal>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "harness.hpp"
#include "haproxy.hpp"
#include "tls_client.hpp"

using namespace harness;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

namespace {

const std::string source_dir = NETSERVER_SOURCE_DIR;

// The server's keys for the edge: every listener behind a balancer on 127.0.0.1.
std::string edge_yaml(const std::string& personality, const std::string& more = "") {
  return "personality: " + personality + "\nlisten:\n  - 127.0.0.1:0\nlog_level: 3\n" +
         "proxy_protocol: [all]\nproxy_trusted: [127.0.0.1/32]\n" +
         "prefork:\n  min_servers: 3\n  max_servers: 6\n  min_spare_servers: 1\n  max_spare_servers: 4\n" + more;
}

std::string personality_yaml(const std::string& name) {
  if (name == "workers") return "multiplex\nmultiplex:\n  workers: 2\n";
  return name + "\n";
}

HaproxySetup in_front_of(const ServerProcess& server, const std::string& send_proxy) {
  HaproxySetup setup;
  setup.backend = "127.0.0.1:" + std::to_string(server.port());
  setup.send_proxy = send_proxy;
  return setup;
}

// A probe_server client through HAProxy from `source`, past the greeting.
Client probe_from(const Haproxy& haproxy, const std::string& source) {
  Client client(haproxy.port(), "127.0.0.1", source);
  const auto ready = client.read_line(10s);
  REQUIRE(ready);
  REQUIRE_THAT(*ready, StartsWith("probe ready"));
  return client;
}

std::string ask(Client& client, const std::string& command) {
  REQUIRE(client.send(command + "\r\n"));
  return client.read_line(10s).value_or("(nothing)");
}

// The tests' certificates (tests/tls/make-certs) in `dir`.
void make_certs(const TempDir& dir) {
  const Outcome made = run("/bin/bash", {source_dir + "/tests/tls/make-certs", dir.path().string()}, 30s);
  REQUIRE(made.status == 0);
}

// A connection straight to the server from `source` (no balancer).
Client direct(const ServerProcess& server, const std::string& source = "127.0.0.1") {
  return Client(server.port(), "127.0.0.1", source);
}

}  // namespace

TEST_CASE("through HAProxy with v1 and v2 every personality sees the client address", "[edge][haproxy]") {
  for (const std::string personality : {"multiplex", "workers", "prefork", "fork"}) {
    for (const std::string send_proxy : {"send-proxy", "send-proxy-v2"}) {
      DYNAMIC_SECTION(personality << " with " << send_proxy) {
        ServerProcess server(binary("probe_server"), edge_yaml(personality_yaml(personality)));
        const Haproxy haproxy(in_front_of(server, send_proxy));
        const std::string version = send_proxy == "send-proxy" ? "v1" : "v2";
        for (const std::string source : {"127.0.0.2", "127.0.0.3"}) {
          Client client = probe_from(haproxy, source);
          const std::string peer = source + ":" + std::to_string(client.local_port());
          CHECK(ask(client, "peer") == peer);
          CHECK_THAT(ask(client, "proxy"), StartsWith("proxy " + version + " peer=" + peer + " balancer=127.0.0.1:") &&
                                               Contains(" destination=127.0.0.1:" + std::to_string(haproxy.port())));
          CHECK(server.wait_for_log("connection from " + peer + " via 127.0.0.1:"));
          client.close();
          CHECK(server.wait_for_log("closed " + peer + " (session"));
        }
        CHECK_THAT(server.log(), !Contains("connection from 127.0.0.1:"));
      }
    }
  }
}

TEST_CASE("the chat demo labels members by their address from the PROXY header", "[edge][haproxy]") {
  ServerProcess server(binary("chat_server"), edge_yaml("multiplex\n"));
  const Haproxy haproxy(in_front_of(server, "send-proxy-v2"));
  const auto join = [&](const std::string& source) {
    Client client(haproxy.port(), "127.0.0.1", source);
    REQUIRE(client.read_line(10s) == "Welcome, to the server!");
    REQUIRE(client.read_line(10s));
    return client;
  };
  Client a = join("127.0.0.2");
  Client b = join("127.0.0.3");
  CHECK(a.read_line(10s) == "Please welcome 127.0.0.3:" + std::to_string(b.local_port()) + ", who just joined us");
  REQUIRE(a.send("hello from a\r\n"));
  CHECK(b.read_line(10s) == "Client 127.0.0.2:" + std::to_string(a.local_port()) + " said: hello from a");
}

TEST_CASE("HAProxy with PROXY v2 in front of a tls:// listener: the header before the handshake",
          "[edge][haproxy][tls]") {
  TempDir certs;
  make_certs(certs);
  const std::string dir = certs.path().string();
  ServerProcess server(binary("echo_server"),
                       "personality: multiplex\nlog_level: 3\nlisten:\n  - tls://127.0.0.1:0\n"
                       "proxy_protocol: [\"tls://127.0.0.1:0\"]\nproxy_trusted: [127.0.0.1/32]\n"
                       "tls:\n  cert_file: " + dir + "/server.pem\n  key_file: " + dir + "/server.key\n");
  const int port = server.port_of("tls://127.0.0.1");
  REQUIRE(port > 0);
  HaproxySetup setup;
  setup.backend = "127.0.0.1:" + std::to_string(port);
  setup.send_proxy = "send-proxy-v2";
  const Haproxy haproxy(setup);
  TlsClient client(haproxy.port(), dir, "127.0.0.2");
  CHECK_THAT(client.read_line(), StartsWith("Welcome to \"echo\" (personality multiplex") && Contains(", tls TLSv1."));
  REQUIRE(client.send("over tls through haproxy\r\n"));
  CHECK(client.read_line() == "over tls through haproxy");
  CHECK(server.wait_for_log("connection from 127.0.0.2:" + std::to_string(client.local_port()) + " via 127.0.0.1:"));
}

TEST_CASE("handlers see the balancer and the PP2 authority and whether the balancer verified the client",
          "[edge][haproxy][tls]") {
  TempDir certs;
  make_certs(certs);
  const std::string dir = certs.path().string();
  std::ifstream cert(dir + "/server.pem"), key(dir + "/server.key");
  std::stringstream bundle;  // HAProxy takes the certificate and its key in one file
  bundle << cert.rdbuf() << key.rdbuf();
  const std::string pem = certs.write("haproxy.pem", bundle.str()).string();
  ServerProcess server(binary("probe_server"), edge_yaml("multiplex\n"));
  HaproxySetup setup = in_front_of(server, "send-proxy-v2-ssl-cn");
  setup.proxy_v2_options = {"authority"};
  setup.bind_options = "ssl crt " + pem + " ca-file " + dir + "/ca.pem verify optional";
  const Haproxy haproxy(setup);

  TlsClient alice(haproxy.port(), dir, "127.0.0.2", "a.test", true);
  CHECK_THAT(alice.read_line(), StartsWith("probe ready"));
  REQUIRE(alice.send("proxy\r\n"));
  const std::string peer = "127.0.0.2:" + std::to_string(alice.local_port());
  CHECK_THAT(alice.read_line(), StartsWith("proxy v2 peer=" + peer + " balancer=127.0.0.1:") &&
                                    Contains(" local=no authority=a.test ssl=yes verified=yes cn=alice"));

  TlsClient anonymous(haproxy.port(), dir, "127.0.0.3", "b.test", false);
  CHECK_THAT(anonymous.read_line(), StartsWith("probe ready"));
  REQUIRE(anonymous.send("proxy\r\n"));
  CHECK_THAT(anonymous.read_line(), Contains(" authority=b.test ssl=yes verified=no cn="));

  Client plain = direct(server);  // trusted, but no TLS behind it: a plain v1 header by hand
  REQUIRE(plain.send("PROXY TCP4 192.0.2.7 127.0.0.1 4242 80\r\n"));
  REQUIRE(plain.read_line(10s));
  CHECK_THAT(ask(plain, "proxy"), StartsWith("proxy v1 peer=192.0.2.7:4242 balancer=127.0.0.1:") &&
                                      Contains(" authority= ssl=no verified=no"));
}

TEST_CASE("cidr_deny applies to the client's address through HAProxy", "[edge][haproxy]") {
  ServerProcess server(binary("echo_server"),
                       edge_yaml("multiplex\n", "cidr_allow: [127.0.0.0/8]\ncidr_deny: [127.0.0.3/32]\n"));
  const Haproxy haproxy(in_front_of(server, "send-proxy-v2"));
  Client allowed(haproxy.port(), "127.0.0.1", "127.0.0.2");
  CHECK_THAT(allowed.read_line(10s).value_or(""), StartsWith("Welcome to \"echo\""));
  Client denied(haproxy.port(), "127.0.0.1", "127.0.0.3");
  CHECK(denied.closed_by_peer(10s));
  CHECK(server.wait_for_log("refused 127.0.0.3:" + std::to_string(denied.local_port()) + " (session"));
  REQUIRE(allowed.send("still here\r\n"));
  CHECK(allowed.read_line(10s) == "still here");
}

TEST_CASE("a bad PROXY header loses only its own connection", "[edge]") {
  ServerProcess server(binary("echo_server"), edge_yaml("multiplex\n", "proxy_timeout: 1\n"));
  const Haproxy haproxy(in_front_of(server, "send-proxy-v2"));
  Client good(haproxy.port(), "127.0.0.1", "127.0.0.2");
  CHECK_THAT(good.read_line(10s).value_or(""), StartsWith("Welcome to \"echo\""));

  Client garbage = direct(server);
  REQUIRE(garbage.send(std::string("GET / HTTP/1.0\x01\xff\r\n\r\n")));
  CHECK(garbage.closed_by_peer(5s));
  CHECK(server.wait_for_log("bad PROXY header"));

  Client truncated = direct(server);  // the v2 signature and half of the fixed part, then nothing
  REQUIRE(truncated.send(std::string("\r\n\r\n\0\r\nQUIT\n\x21", 13)));
  truncated.close();
  CHECK(server.wait_for_log("the connection ended inside its PROXY header (13 bytes of it)"));

  Client too_long = direct(server);  // 200 bytes of v1 without a line end
  REQUIRE(too_long.send("PROXY TCP4 " + std::string(189, '1')));
  CHECK(too_long.closed_by_peer(5s));
  CHECK(server.wait_for_log("PROXY v1: no CRLF within the first 107 bytes"));

  Client slow = direct(server);  // a header one byte at a time, too slowly: cut at proxy_timeout
  const std::string header = "PROXY TCP4 127.0.0.2 127.0.0.1 5000 80\r\n";
  const auto started = std::chrono::steady_clock::now();
  bool cut = false;
  for (std::size_t i = 0; i < header.size() && !cut; ++i) {
    if (!slow.send(header.substr(i, 1))) break;
    cut = slow.closed_by_peer(300ms);
  }
  CHECK((cut || slow.closed_by_peer(3s)));
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  CHECK(server.wait_for_log("no complete PROXY header within 1 s"));
  CHECK_THAT(server.log(), !Contains("connection from 127.0.0.2:5000"));

  // Escaped in the log: no raw control byte or invalid UTF-8 from a client reached it.
  CHECK_THAT(server.log(), !Contains("\x01") && !Contains("\xff"));
  REQUIRE(good.send("unharmed\r\n"));
  CHECK(good.read_line(10s) == "unharmed");
}

// A balancer that had the client's first bytes before it connected sends them with the header, in
// one segment; on a plaintext listener they are read with it and must reach the handler.
TEST_CASE("the client's first lines in the PROXY header's segment reach the handler", "[edge]") {
  const std::string v2_tcp4 = std::string("\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c", 16) +
                              std::string("\x7f\x00\x00\x02\x7f\x00\x00\x01\x13\x88\x00\x50", 12);
  for (const std::string personality : {"multiplex", "prefork", "fork"}) {
    DYNAMIC_SECTION(personality) {
      ServerProcess server(binary("echo_server"), edge_yaml(personality + "\n"));
      for (const std::string& header : {std::string("PROXY TCP4 127.0.0.2 127.0.0.1 5000 80\r\n"), v2_tcp4}) {
        Client client = direct(server);
        REQUIRE(client.send(header + "first\r\nsecond\r\n"));
        CHECK_THAT(client.read_line(10s).value_or(""), StartsWith("Welcome to \"echo\""));
        CHECK(client.read_line(10s) == "first");
        CHECK(client.read_line(10s) == "second");
        REQUIRE(client.send("third\r\n"));
        CHECK(client.read_line(10s) == "third");
        client.close();
        CHECK(eventually([&] { return server.count_in_log("closed 127.0.0.2:5000") == (header[0] == 'P' ? 1u : 2u); }));
      }
      CHECK(server.count_in_log("22 bytes in") == 2);  // first, second and third lines, counted once each
    }
  }
}

TEST_CASE("a PROXY header from an address outside proxy_trusted is refused", "[edge]") {
  ServerProcess server(binary("probe_server"), "personality: multiplex\nlisten:\n  - 127.0.0.1:0\nlog_level: 3\n"
                                               "proxy_protocol: [all]\nproxy_trusted: [127.0.0.9/32]\n");
  Client forged = direct(server, "127.0.0.2");
  forged.send("PROXY TCP4 192.0.2.1 127.0.0.1 1111 80\r\npeer\r\n");
  CHECK(forged.closed_by_peer(5s));
  CHECK(server.wait_for_log("refused 127.0.0.2:" + std::to_string(forged.local_port()) +
                            " on 127.0.0.1:0: not in proxy_trusted"));
  CHECK_THAT(server.log(), !Contains("192.0.2.1"));
  // A trusted balancer is served.
  HaproxySetup setup = in_front_of(server, "send-proxy");
  setup.source = "127.0.0.9";
  const Haproxy haproxy(setup);
  Client client = probe_from(haproxy, "127.0.0.3");
  CHECK(ask(client, "peer") == "127.0.0.3:" + std::to_string(client.local_port()));
}

// The fourth connection from one address is refused however the three are spread over the
// processes; closing one lets the next in; another address is served meanwhile.
TEST_CASE("max_connections_per_ip is one total across the processes", "[edge][haproxy][limits]") {
  for (const std::string personality : {"workers", "prefork", "fork"}) {
    DYNAMIC_SECTION(personality) {
      ServerProcess server(binary("echo_server"),
                           edge_yaml(personality_yaml(personality), "max_connections_per_ip: 3\n"));
      const Haproxy haproxy(in_front_of(server, "send-proxy-v2"));
      std::vector<Client> three;
      for (int i = 0; i < 3; ++i) {
        three.emplace_back(haproxy.port(), "127.0.0.1", "127.0.0.2");
        CHECK_THAT(three.back().read_line(10s).value_or(""), StartsWith("Welcome to \"echo\""));
      }
      Client fourth(haproxy.port(), "127.0.0.1", "127.0.0.2");
      CHECK(fourth.read_line(10s) == "error: too many connections from your address");
      CHECK(fourth.closed_by_peer(5s));
      CHECK(server.wait_for_log("refused 127.0.0.2:" + std::to_string(fourth.local_port()) +
                                " on 127.0.0.1:0: too many connections from its address (3 open, "
                                "max_connections_per_ip 3)"));
      Client other(haproxy.port(), "127.0.0.1", "127.0.0.3");
      CHECK_THAT(other.read_line(10s).value_or(""), StartsWith("Welcome to \"echo\""));
      const int first_port = three.front().local_port();
      three.front().close();
      CHECK(server.wait_for_log("closed 127.0.0.2:" + std::to_string(first_port) + " (session"));
      // The count is given back when the session ends (under Fork: when the parent reaps the
      // child, a moment after the child logged the close).
      CHECK(eventually([&] {
        Client next(haproxy.port(), "127.0.0.1", "127.0.0.2");
        return next.read_line(10s).value_or("").starts_with("Welcome to \"echo\"");
      }, 10s));
    }
  }
}

// A PreFork child killed while its client is connected never ends that session: the parent's
// reclaim at the reap gives the count back, or the address would stay locked out.
TEST_CASE("a child killed holding a connection has its count given back", "[edge][limits]") {
  ServerProcess server(binary("probe_server"),
                       "personality: prefork\nlisten:\n  - 127.0.0.1:0\nlog_level: 3\nmax_connections_per_ip: 1\n"
                       "prefork:\n  min_servers: 2\n  max_servers: 4\n  min_spare_servers: 1\n  max_spare_servers: 3\n");
  server.expect_errors();  // the killed child is reported
  Client held = direct(server, "127.0.0.2");
  REQUIRE_THAT(held.read_line(10s).value_or(""), StartsWith("probe ready"));
  Client refused = direct(server, "127.0.0.2");
  CHECK(refused.read_line(10s) == "error: too many connections from your address");
  const std::string child = ask(held, "pid");
  ::kill(std::stoi(child), SIGKILL);
  CHECK(held.closed_by_peer(10s));
  CHECK(server.wait_for_log("child " + child + " ended holding 1 connection(s) in the per-address limits"));
  Client next = direct(server, "127.0.0.2");
  CHECK_THAT(next.read_line(10s).value_or(""), StartsWith("probe ready"));
}

TEST_CASE("connection_rate_per_ip with a burst refuses connections that come too fast", "[edge][limits]") {
  ServerProcess server(binary("echo_server"), "personality: multiplex\nlisten:\n  - 127.0.0.1:0\nlog_level: 3\n"
                                              "connection_rate_per_ip: 1\nconnection_burst_per_ip: 2\n");
  Client first = direct(server, "127.0.0.2");
  Client second = direct(server, "127.0.0.2");
  Client third = direct(server, "127.0.0.2");  // within the same second: past the burst
  CHECK_THAT(first.read_line(10s).value_or(""), StartsWith("Welcome to \"echo\""));
  CHECK_THAT(second.read_line(10s).value_or(""), StartsWith("Welcome to \"echo\""));
  CHECK(third.read_line(10s) == "error: too many connections from your address");
  CHECK(server.wait_for_log("refused 127.0.0.2:" + std::to_string(third.local_port()) +
                            " on 127.0.0.1:0: new connections from its address too fast (connection_rate_per_ip 1)"));
  Client elsewhere = direct(server, "127.0.0.3");
  CHECK_THAT(elsewhere.read_line(10s).value_or(""), StartsWith("Welcome to \"echo\""));
}

TEST_CASE("unix-socket clients have no address and are not limited", "[edge][limits]") {
  TempDir dir;
  const std::string path = (dir.path() / "echo.sock").string();
  ServerProcess server(binary("echo_server"), "personality: multiplex\nlog_level: 3\nmax_connections_per_ip: 1\n"
                                              "listen:\n  - 127.0.0.1:0\n  - unix:" + path + "\n");
  REQUIRE(server.wait_for_log("listening on unix:" + path));
  Client first = Client::unix_socket(path);
  Client second = Client::unix_socket(path);
  CHECK_THAT(first.read_line(10s).value_or(""), StartsWith("Welcome to \"echo\""));
  CHECK_THAT(second.read_line(10s).value_or(""), StartsWith("Welcome to \"echo\""));
  Client tcp = direct(server, "127.0.0.2");  // the limit itself is on
  Client over = direct(server, "127.0.0.2");
  CHECK_THAT(tcp.read_line(10s).value_or(""), StartsWith("Welcome to \"echo\""));
  CHECK(over.read_line(10s) == "error: too many connections from your address");
}

TEST_CASE("the edge keys are checked at start and by --check-config", "[edge][config]") {
  TempDir dir;
  const auto check = [&](const std::string& yaml, const std::vector<std::string>& more = {}) {
    const std::string path = dir.write("config.yaml", yaml).string();
    std::vector<std::string> args{"--config", path};
    args.insert(args.end(), more.begin(), more.end());
    return run(binary("echo_server"), args, 10s);
  };
  const std::string path = (dir.path() / "config.yaml").string();

  Outcome outcome = check("listen: [127.0.0.1:0]\nproxy_protocol: [all]\n", {"--check-config"});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains(path + ":2:") && Contains("proxy_trusted is empty"));
  outcome = check("listen: [127.0.0.1:0]\nproxy_protocol: [all]\n");  // the start refuses it too, before binding
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains("proxy_trusted is empty") && !Contains("listening on"));

  outcome = check("listen: [127.0.0.1:0]\nproxy_trusted: [10.0.0.0/8]\nproxy_protocol:\n  - 127.0.0.1:9\n",
                  {"--check-config"});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains(path + ":4:") && Contains("\"127.0.0.1:9\" is not one of the listen addresses"));

  outcome = check("listen: [127.0.0.1:0]\nproxy_trusted: [10.0.0.300/8]\n", {"--check-config"});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains(path + ":2:"));

  outcome = check("listen: [127.0.0.1:0]\nconnection_burst_per_ip: 5\n", {"--check-config"});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains("connection_burst_per_ip") && Contains("connection_rate_per_ip"));

  outcome = check("listen: [127.0.0.1:0]\nproxy_trusted: [10.0.0.0/8]\nproxy_protocol: [127.0.0.1:0]\n"
                  "max_connections_per_ip: 3\nconnection_rate_per_ip: 10\n",
                  {"--check-config"});
  CHECK(outcome.status == 0);
  CHECK_THAT(outcome.output, Contains("configuration OK"));
}
