// The edge keys (src/edge_options.*): their schema, their checks against the listen addresses,
// and the settings the accept path reads.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <netserver/errors.hpp>

#include "edge_options.hpp"

using namespace netserver;
using Catch::Matchers::Contains;

namespace {

struct Fixture {
  Options options;
  Fixture() { add_edge_options(options); }
  Config load(const std::string& yaml) {
    Config config(options);
    config.load_yaml(yaml, "edge.yaml");
    return config;
  }
  // The error of loading `yaml` and checking it against `listen`, or "no error".
  std::string error_of(const std::string& yaml, const std::vector<std::string>& listen = {"127.0.0.1:8000"}) {
    try {
      check_edge_options(load(yaml), listen);
    } catch (const ConfigError& error) {
      return error.what();
    }
    return "no error";
  }
};

sockaddr_storage peer(const char* ip) {
  sockaddr_storage storage{};
  if (std::string(ip).find(':') == std::string::npos) {
    auto& v4 = reinterpret_cast<sockaddr_in&>(storage);
    v4.sin_family = AF_INET;
    REQUIRE(::inet_pton(AF_INET, ip, &v4.sin_addr) == 1);
  } else {
    auto& v6 = reinterpret_cast<sockaddr_in6&>(storage);
    v6.sin6_family = AF_INET6;
    REQUIRE(::inet_pton(AF_INET6, ip, &v6.sin6_addr) == 1);
  }
  return storage;
}

bool trusts(const EdgeSettings& settings, const char* ip) {
  const sockaddr_storage address = peer(ip);
  return settings.trusts(reinterpret_cast<const sockaddr*>(&address), sizeof address);
}

}  // namespace

TEST_CASE("the edge keys are off by default", "[edge]") {
  Fixture f;
  const Config config = f.load("");
  CHECK(config.integer("max_connections_per_ip") == 0);
  CHECK(config.integer("ipv6_prefix") == 64);
  CHECK(config.seconds("proxy_timeout") == 5);
  CHECK_NOTHROW(check_edge_options(config, {"127.0.0.1:8000"}));
  const EdgeSettings settings = edge_settings(config, 8);
  CHECK_FALSE(settings.limits.enabled());
  CHECK_FALSE(settings.expects_proxy("127.0.0.1:8000"));
  CHECK(settings.proxy_timeout == std::chrono::seconds(5));
}

TEST_CASE("the edge settings come from the keys", "[edge]") {
  Fixture f;
  const Config config = f.load(
      "max_connections_per_ip: 3\nconnection_rate_per_ip: 20\nconnection_burst_per_ip: 40\nipv6_prefix: 48\n"
      "proxy_protocol: ['127.0.0.1:8000', 'tls://[::1]:8443']\nproxy_trusted: [127.0.0.1/32, '::1']\n"
      "proxy_timeout: 250ms\n");
  CHECK_NOTHROW(check_edge_options(config, {"127.0.0.1:8000", "tls://[::1]:8443", "unix:/tmp/x.sock"}));
  const EdgeSettings settings = edge_settings(config, 17);
  CHECK(settings.limits.max_connections == 3);
  CHECK(settings.limits.rate == 20);
  CHECK(settings.limits.burst == 40);
  CHECK(settings.limits.process_slots == 17);
  CHECK(settings.ipv6_prefix == 48);
  CHECK(settings.proxy_timeout == std::chrono::milliseconds(250));
  CHECK(settings.expects_proxy("tcp://127.0.0.1:8000"));  // the same listener, with its scheme written out
  CHECK(settings.expects_proxy("127.0.0.1:8000"));
  CHECK(settings.expects_proxy("tls://[::1]:8443"));
  CHECK_FALSE(settings.expects_proxy("[::1]:8443"));  // the plain listener on that port is another one
  CHECK_FALSE(settings.expects_proxy("unix:/tmp/x.sock"));
  CHECK(trusts(settings, "127.0.0.1"));
  CHECK(trusts(settings, "::1"));
  CHECK(trusts(settings, "::ffff:127.0.0.1"));
  CHECK_FALSE(trusts(settings, "127.0.0.2"));
  sockaddr_un unix_peer{};
  unix_peer.sun_family = AF_UNIX;
  CHECK(settings.trusts(reinterpret_cast<const sockaddr*>(&unix_peer), sizeof unix_peer));

  const EdgeSettings everywhere = edge_settings(f.load("proxy_protocol: [all]\nproxy_trusted: [10.0.0.0/8]\n"), 1);
  CHECK(everywhere.expects_proxy("unix:/tmp/x.sock"));
  CHECK(trusts(everywhere, "10.200.0.1"));
}

TEST_CASE("proxy_protocol needs proxy_trusted", "[edge]") {
  Fixture f;
  CHECK_THAT(f.error_of("proxy_protocol: ['127.0.0.1:8000']\n"),
             Contains("edge.yaml:1:17: proxy_protocol is set, but proxy_trusted is empty"));
  CHECK(f.error_of("proxy_protocol: ['127.0.0.1:8000']\nproxy_trusted: [127.0.0.1]\n") == "no error");
}

TEST_CASE("proxy_protocol names listen addresses as written or all", "[edge]") {
  Fixture f;
  const std::string trusted = "proxy_trusted: [127.0.0.1]\n";
  CHECK_THAT(f.error_of(trusted + "proxy_protocol:\n  - 127.0.0.1:8000\n  - 127.0.0.1:9000\n"),
             Contains("edge.yaml:3:3: proxy_protocol: \"127.0.0.1:9000\" is not one of the listen addresses "
                      "(127.0.0.1:8000)"));
  CHECK_THAT(f.error_of(trusted + "proxy_protocol: ['tls://127.0.0.1:8000']\n"),
             Contains("\"tls://127.0.0.1:8000\" is not one of the listen addresses"));
  CHECK_THAT(f.error_of(trusted + "proxy_protocol: [all, '127.0.0.1:8000']\n"), Contains("`all` already names every listener"));
  CHECK(f.error_of(trusted + "proxy_protocol: [all]\n") == "no error");
  CHECK(f.error_of(trusted + "proxy_protocol: ['unix:/run/x.sock']\n", {"unix:/run/x.sock"}) == "no error");
}

TEST_CASE("bad edge values are refused with where they were set", "[edge]") {
  Fixture f;
  CHECK_THAT(f.error_of("proxy_protocol: ['nonsense']\n"), Contains("edge.yaml:1:17: proxy_protocol: \"nonsense\" is neither `all` nor a listen address"));
  CHECK_THAT(f.error_of("proxy_trusted: [10.0.0.0/33]\n"), Contains("edge.yaml:1:16: proxy_trusted:"));
  CHECK_THAT(f.error_of("ipv6_prefix: 0\n"), Contains("edge.yaml:1:14: ipv6_prefix: expected an integer from 1 to 128"));
  CHECK_THAT(f.error_of("max_connections_per_ip: -1\n"), Contains("max_connections_per_ip: expected an integer"));
  CHECK_THAT(f.error_of("proxy_timeout: 0\n"), Contains("proxy_timeout:"));
  CHECK_THAT(f.error_of("connection_burst_per_ip: 10\n"),
             Contains("connection_burst_per_ip = 10 (edge.yaml:1:26) has no effect without connection_rate_per_ip"));
  CHECK(f.error_of("connection_burst_per_ip: 10\nconnection_rate_per_ip: 5\n") == "no error");
}
