// Listening: IPv4, IPv6 and unix sockets together, stale and live unix socket files, host "*" on
// a machine without IPv6, systemd socket activation and readiness notifications.

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

std::string multiplex(const std::string& rest) { return "personality: multiplex\nlog_level: 3\n" + rest; }

}  // namespace

TEST_CASE("IPv4 and IPv6 and unix sockets are served side by side", "[listen]") {
  TempDir dir;
  const std::string path = (dir.path() / "echo.sock").string();
  ServerProcess server(binary("echo_server"),
                       multiplex("listen: [\"127.0.0.1:0\", \"[::1]:0\", \"unix:" + path + "\"]\nunix_mode: \"0600\"\n"));
  const int v6 = server.port_of("[::1]");
  REQUIRE(v6 > 0);
  Client over_v4(server.port());
  Client over_v6(v6, "::1");
  Client over_unix = Client::unix_socket(path);
  for (Client* client : {&over_v4, &over_v6, &over_unix}) {
    REQUIRE(client->read_line());
    client->send("ping\r\n");
    CHECK(client->read_line() == "ping");
  }
  struct stat info {};
  REQUIRE(::stat(path.c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0600);
  CHECK(server.wait_for_log("connection from [::1]:"));
  CHECK(server.wait_for_log("connection from unix:" + path));
  CHECK(server.stop() == 0);
  CHECK_FALSE(std::filesystem::exists(path));  // removed at exit
}

TEST_CASE("a stale unix socket file is replaced and a live one is an error", "[listen][unix]") {
  TempDir dir;
  const std::string path = (dir.path() / "s.sock").string();
  {  // a socket file nobody listens on any more
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    ::close(fd);
  }
  ServerProcess server(binary("echo_server"), multiplex("listen: [\"unix:" + path + "\"]\n"));
  CHECK(server.wait_for_log("removing stale unix socket " + path));
  Client client = Client::unix_socket(path);
  REQUIRE(client.read_line());

  const Outcome second = run(binary("echo_server"), {"--listen=unix:" + path});
  CHECK(second.status == 1);
  CHECK_THAT(second.output, Contains("cannot bind unix:" + path + ": another server is listening on it"));
  CHECK(std::filesystem::exists(path));  // the running server's socket is untouched

  const std::string plain = dir.write("plain", "not a socket").string();
  const Outcome blocked = run(binary("echo_server"), {"--listen=unix:" + plain});
  CHECK_THAT(blocked.output, Contains("the file exists and is not a socket"));
}

TEST_CASE("host * works where IPv6 is missing (Net::Server issue 37)", "[listen]") {
  ServerProcess server(binary("echo_server"), multiplex("host: \"*\"\nport: 0\n"),
                       Launch().with_env("LD_PRELOAD", binary("libno_ipv6.so")).with_env("ASAN_OPTIONS", "verify_asan_link_order=0"));
  CHECK(server.wait_for_log("IPv6 is unavailable (Address family not supported by protocol)"));
  const int port = server.port_of("0.0.0.0");
  REQUIRE(port > 0);
  Client client(port);
  CHECK(client.read_line());
}

TEST_CASE("systemd socket activation: the passed socket is served instead of the configured address",
          "[listen][systemd]") {
  ServerProcess server(binary("echo_server"), multiplex("listen: [\"127.0.0.1:1\"]\n"),
                       Launch().with_wrapper({binary("socket_activate"), "127.0.0.1:0"}));
  CHECK(server.wait_for_log("listening on the sockets systemd passed"));
  CHECK(server.log().find("127.0.0.1:1\n") == std::string::npos);  // the configured address was not bound
  Client client(server.port());
  CHECK(client.read_line());
}

TEST_CASE("sd_notify: READY with a status then STOPPING", "[listen][systemd]") {
  TempDir dir;
  const std::string path = (dir.path() / "notify").string();
  DatagramSink notify(path);
  ServerProcess server(binary("echo_server"), multiplex("host: 127.0.0.1\nport: 0\n"),
                       Launch().with_env("NOTIFY_SOCKET", path));
  const std::string ready = notify.until("READY=1");
  CHECK_THAT(ready, Contains("READY=1") && Contains("STATUS=serving on 1 listener(s)") &&
                        Contains("MAINPID=" + std::to_string(server.pid())));
  Client client(server.port());
  REQUIRE(client.read_line());
  CHECK_THAT(notify.until("STATUS=1 session(s) open", 6s), Contains("STATUS=1 session(s) open"));
  server.signal(SIGTERM);
  CHECK_THAT(notify.until("STOPPING=1"), Contains("STOPPING=1"));
}

TEST_CASE("an address listed twice is bound once", "[listen]") {
  ServerProcess server(binary("echo_server"), multiplex("listen: [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n"));
  CHECK(server.count_in_log("listening on 127.0.0.1:") == 1);
  Client client(server.port());
  CHECK(client.read_line());
}
