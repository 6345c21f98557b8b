// A real HAProxy (tests/support/haproxy.*) in front of a tiny listening socket: the PROXY headers
// it sends, v1 and v2, for clients connecting from 127.0.0.2 and 127.0.0.3, read back with the
// project's parser (src/proxy_protocol.*).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include <catch2/catch.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "harness.hpp"
#include "haproxy.hpp"
#include "tls_client.hpp"
#include "proxy_protocol.hpp"

using namespace harness;
using netserver::ProxyHeader;
using netserver::ProxyHeaderParser;

namespace {

// What the backend received on one connection: the header, the bytes after it, who connected.
struct Received {
  ProxyHeader header;
  std::string rest;
  std::string peer;  // HAProxy's own address on this connection
};

// A listening socket standing in for the server behind HAProxy.
class Backend {
 public:
  explicit Backend(const std::string& host = "127.0.0.1") {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    ::inet_pton(AF_INET, host.c_str(), &address.sin_addr);
    socklen_t length = sizeof address;
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), length) == 0);
    REQUIRE(::listen(fd_, 64) == 0);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) == 0);
    port_ = ntohs(address.sin_port);
  }
  ~Backend() { ::close(fd_); }
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  // Accepts one connection and reads its PROXY header and then `rest_bytes` more.
  Received receive(std::size_t rest_bytes, Seconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout);
    REQUIRE(wait_readable(fd_, deadline));
    sockaddr_storage peer{};
    socklen_t length = sizeof peer;
    const int connection = ::accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_CLOEXEC);
    REQUIRE(connection >= 0);
    Received received;
    char text[INET6_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in&>(peer).sin_addr, text, sizeof text);
    received.peer = text;
    ProxyHeaderParser parser;
    char buffer[4096];
    while (parser.status() != ProxyHeaderParser::Status::done || received.rest.size() < rest_bytes) {
      if (!wait_readable(connection, deadline)) break;
      const ssize_t got = ::read(connection, buffer, sizeof buffer);
      if (got <= 0) break;
      std::string_view bytes(buffer, static_cast<std::size_t>(got));
      if (parser.status() == ProxyHeaderParser::Status::need_more) {
        const auto progress = parser.feed(bytes);
        if (progress.status == ProxyHeaderParser::Status::malformed) break;
        bytes.remove_prefix(progress.consumed);
      }
      received.rest.append(bytes);
    }
    ::close(connection);
    INFO("problem: " << parser.problem());
    REQUIRE(parser.status() == ProxyHeaderParser::Status::done);
    received.header = parser.header();
    return received;
  }

 private:
  static bool wait_readable(int fd, std::chrono::steady_clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd entry{fd, POLLIN, 0};
    return ::poll(&entry, 1, static_cast<int>(std::max<long>(left.count(), 0))) == 1;
  }
  int fd_ = -1;
  int port_ = 0;
};

HaproxySetup in_front_of(const Backend& backend, const std::string& send_proxy) {
  HaproxySetup setup;
  setup.backend = backend.address();
  setup.send_proxy = send_proxy;
  return setup;
}

// A client from `source` through HAProxy sends a line; the backend reads what HAProxy relayed.
Received relay_from(const std::string& source, const Haproxy& haproxy, Backend& backend, int& client_port) {
  Client client(haproxy.port(), "127.0.0.1", source);
  client_port = client.local_port();
  REQUIRE(client.send("hello\r\n"));
  return backend.receive(7);
}

}  // namespace

TEST_CASE("HAProxy send-proxy: a v1 header naming clients from 127.0.0.2 and 127.0.0.3", "[haproxy]") {
  Backend backend;
  const Haproxy haproxy(in_front_of(backend, "send-proxy"));
  for (const std::string source : {"127.0.0.2", "127.0.0.3"}) {
    int client_port = 0;
    const Received received = relay_from(source, haproxy, backend, client_port);
    CHECK(received.header.version == 1);
    CHECK(received.header.has_addresses);
    CHECK(received.header.source_text() == source + ":" + std::to_string(client_port));
    CHECK(received.header.destination_text() == "127.0.0.1:" + std::to_string(haproxy.port()));
    CHECK(received.rest == "hello\r\n");
    CHECK(received.peer == "127.0.0.1");  // the balancer's own address
  }
}

TEST_CASE("HAProxy send-proxy-v2: a binary header with a checked CRC32C", "[haproxy]") {
  Backend backend;
  HaproxySetup setup = in_front_of(backend, "send-proxy-v2");
  setup.proxy_v2_options = {"crc32c"};
  const Haproxy haproxy(setup);
  for (const std::string source : {"127.0.0.2", "127.0.0.3"}) {
    int client_port = 0;
    const Received received = relay_from(source, haproxy, backend, client_port);
    CHECK(received.header.version == 2);
    CHECK(received.header.command == ProxyHeader::Command::proxy);
    CHECK(received.header.source.ss_family == AF_INET);
    CHECK(received.header.source_text() == source + ":" + std::to_string(client_port));
    CHECK(received.header.destination_text() == "127.0.0.1:" + std::to_string(haproxy.port()));
    CHECK(received.header.checksum_checked);  // HAProxy's checksum agrees with ours
    CHECK(received.rest == "hello\r\n");
  }
}

TEST_CASE("HAProxy send-proxy-v2-ssl from a plain frontend: an SSL TLV saying no TLS", "[haproxy]") {
  Backend backend;
  const Haproxy haproxy(in_front_of(backend, "send-proxy-v2-ssl"));
  int client_port = 0;
  const Received received = relay_from("127.0.0.2", haproxy, backend, client_port);
  CHECK(received.header.source_text() == "127.0.0.2:" + std::to_string(client_port));
  CHECK(received.header.ssl.present);
  CHECK(received.header.ssl.client == 0);
  CHECK_FALSE(received.header.ssl_verified());
}

TEST_CASE("HAProxy connecting from its own source address names the client in the header", "[haproxy]") {
  Backend backend;
  HaproxySetup setup = in_front_of(backend, "send-proxy-v2");
  setup.source = "127.0.0.9";
  const Haproxy haproxy(setup);
  int client_port = 0;
  const Received received = relay_from("127.0.0.3", haproxy, backend, client_port);
  CHECK(received.peer == "127.0.0.9");
  CHECK(received.header.source_text() == "127.0.0.3:" + std::to_string(client_port));
}

TEST_CASE("HAProxy health checks send a v2 LOCAL header", "[haproxy]") {
  Backend backend;
  HaproxySetup setup = in_front_of(backend, "send-proxy-v2");
  setup.server_options = "check check-send-proxy inter 200ms";
  const Haproxy haproxy(setup);
  const Received received = backend.receive(0);  // no client: the check comes by itself
  CHECK(received.header.version == 2);
  CHECK(received.header.command == ProxyHeader::Command::local);
  CHECK_FALSE(received.header.has_addresses);
}

TEST_CASE("HAProxy on IPv6 sends TCP6 and AF_INET6 headers", "[haproxy]") {
  Backend backend;
  for (const std::string send_proxy : {"send-proxy", "send-proxy-v2"}) {
    HaproxySetup setup = in_front_of(backend, send_proxy);
    setup.frontend_host = "::1";
    const Haproxy haproxy(setup);
    Client client(haproxy.port(), "::1", "::1");
    REQUIRE(client.send("hello\r\n"));
    const Received received = backend.receive(7);
    CHECK(received.header.source.ss_family == AF_INET6);
    CHECK(received.header.source_text() == "[::1]:" + std::to_string(client.local_port()));
    CHECK(received.header.destination_text() == "[::1]:" + std::to_string(haproxy.port()));
  }
}

TEST_CASE("a HAProxy that cannot start says why", "[haproxy]") {
  HaproxySetup setup;
  setup.backend = "127.0.0.1:1";
  setup.send_proxy = "send-proxy-v9";
  try {
    const Haproxy haproxy(setup);
    FAIL("haproxy started with a bad keyword");
  } catch (const std::runtime_error& error) {
    CHECK_THAT(error.what(), Catch::Contains("haproxy did not start") && Catch::Contains("send-proxy-v9"));
  }
}

TEST_CASE("HAProxy terminating TLS: the SSL TLV says whether the client certificate verified", "[haproxy]") {
  TempDir certs;
  const Outcome made = run("/bin/bash", {std::string(NETSERVER_SOURCE_DIR) + "/tests/tls/make-certs", certs.path().string()}, 30s);
  REQUIRE(made.status == 0);
  std::ifstream cert(certs.path() / "server.pem"), key(certs.path() / "server.key");
  std::stringstream bundle;  // HAProxy takes the certificate and its key in one file
  bundle << cert.rdbuf() << key.rdbuf();
  const std::string pem = certs.write("haproxy.pem", bundle.str()).string();
  Backend backend;
  HaproxySetup setup = in_front_of(backend, "send-proxy-v2-ssl-cn");
  setup.bind_options = "ssl crt " + pem + " ca-file " + (certs.path() / "ca.pem").string() + " verify optional";
  const Haproxy haproxy(setup);

  TlsClient alice(haproxy.port(), certs.path().string(), "127.0.0.2", "", true);
  REQUIRE(alice.send("hello\r\n"));
  Received received = backend.receive(7);
  CHECK(received.header.source_text() == "127.0.0.2:" + std::to_string(alice.local_port()));
  CHECK(received.rest == "hello\r\n");
  REQUIRE(received.header.ssl.present);
  CHECK((received.header.ssl.client & ProxyHeader::client_ssl));
  CHECK((received.header.ssl.client & ProxyHeader::client_cert_conn));
  CHECK(received.header.ssl.verify == 0);
  CHECK(received.header.ssl.common_name == "alice");
  CHECK(received.header.ssl.version.starts_with("TLSv1."));
  CHECK(received.header.ssl_verified());

  TlsClient anonymous(haproxy.port(), certs.path().string(), "127.0.0.2", "", false);
  REQUIRE(anonymous.send("hello\r\n"));
  received = backend.receive(7);
  REQUIRE(received.header.ssl.present);
  CHECK((received.header.ssl.client & ProxyHeader::client_ssl));
  CHECK(received.header.ssl.verify == 0);  // HAProxy's 0 without a certificate: not "verified"
  CHECK_FALSE(received.header.ssl_verified());
}
