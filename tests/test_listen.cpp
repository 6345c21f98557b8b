// Listening: IPv4, IPv6 and unix sockets together, stale and live unix socket files, host "*" on
// a machine without IPv6, systemd socket activation and readiness notifications.

#include <catch2/catch.hpp>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <vector>
#include <filesystem>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

std::string multiplex(const std::string& rest) { return "personality: multiplex\nlog_level: 3\n" + rest; }

// A live unix-socket listener that never accepts, its backlog filled by connections it holds: a
// blocking connect() to it waits forever.
class FullUnixListener {
 public:
  explicit FullUnixListener(const std::string& path) : fd_(::socket(AF_UNIX, SOCK_STREAM, 0)) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
    REQUIRE(::listen(fd_, 0) == 0);
    for (int i = 0; i < 16; ++i) {
      const int client = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
      if (::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
        REQUIRE(errno == EAGAIN);  // full now
        ::close(client);
        return;
      }
      clients_.push_back(client);
    }
    FAIL("the backlog never filled");
  }
  ~FullUnixListener() {
    for (int fd : clients_) ::close(fd);
    ::close(fd_);
  }
  FullUnixListener(const FullUnixListener&) = delete;
  FullUnixListener& operator=(const FullUnixListener&) = delete;

 private:
  int fd_;
  std::vector<int> clients_;
};

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
  CHECK(server.wait_for_log("serving the sockets systemd passed"));
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

TEST_CASE("a unix socket whose listener has a full backlog is in use and the probe does not hang",
          "[listen][unix][hardening]") {
  TempDir dir;
  const std::string path = (dir.path() / "busy.sock").string();
  FullUnixListener busy(path);
  const Outcome outcome = run(binary("echo_server"), {"--listen=unix:" + path}, 8s);
  CHECK(outcome.status == 1);  // -1 or 137: it hung and was killed
  CHECK_THAT(outcome.output, Contains("cannot bind unix:" + path + ": another server is listening on it"));
  CHECK(std::filesystem::exists(path));
}

TEST_CASE("a HUP adding a unix socket with a full backlog keeps the server and TERM still stops it",
          "[listen][unix][restart][hardening]") {
  ServerProcess server(binary("echo_server"), multiplex("host: 127.0.0.1\nport: 0\n"));
  const std::string path = (server.dir().path() / "busy.sock").string();
  FullUnixListener busy(path);
  server.dir().write("server.yaml", multiplex("listen: [\"127.0.0.1:0\", \"unix:" + path + "\"]\n"));
  server.signal(SIGHUP);
  CHECK(server.wait_for_log("HUP: cannot bind unix:" + path + ": another server is listening on it", 5s));
  Client client(server.port());
  CHECK(client.read_line(3s));
  client.close();
  server.expect_errors();
  CHECK(server.stop(5s) == 0);
}

TEST_CASE("a relative unix socket path is made absolute before its length is checked", "[listen][unix][hardening]") {
  TempDir dir;
  std::filesystem::path deep = dir.path();
  while (deep.string().size() < 90) deep /= "deeper";
  std::filesystem::create_directories(deep);
  const std::string in_deep = "cd '" + deep.string() + "' && exec '" + binary("echo_server") + "' ";
  const Outcome outcome = run("/bin/sh", {"-c", in_deep + "--listen=unix:a-rather-long-socket-name.sock"}, 5s);
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains("a-rather-long-socket-name.sock is ") && Contains("bytes long; at most 107 fit"));
  CHECK(std::filesystem::is_empty(deep));  // no file with a cut name left behind

  ServerProcess server(binary("echo_server"), multiplex("listen: [\"unix:s.sock\"]\n"),
                       Launch().with_wrapper({"/bin/sh", "-c", "cd '" + deep.string() + "' && exec \"$@\"", "sh"}));
  const std::string full = (deep / "s.sock").string();
  CHECK(server.wait_for_log("listening on unix:" + full));
  Client client = Client::unix_socket(full);
  CHECK(client.read_line());
  client.close();
  CHECK(server.stop() == 0);
  CHECK(std::filesystem::is_empty(deep));
}

TEST_CASE("a socket-activated first start is not logged as a restart and a HUP is", "[listen][systemd][hardening]") {
  ServerProcess server(binary("echo_server"), multiplex("listen: [\"127.0.0.1:1\"]\n"),
                       Launch().with_wrapper({binary("socket_activate"), "127.0.0.1:0"}));
  CHECK(server.wait_for_log("serving the sockets systemd passed"));
  CHECK(server.count_in_log(" starting: ") == 1);
  CHECK(server.count_in_log("(restarted)") == 0);
  server.signal(SIGHUP);
  CHECK(server.wait_for_log("(restarted)"));
  Client client(server.port());
  CHECK(client.read_line());
}

TEST_CASE("a second protocol on its own listeners is served beside the main one", "[listen][service]") {
  TempDir dir;
  const std::string admin = (dir.path() / "admin.sock").string();
  ServerProcess server(binary("probe_server"),
                       multiplex("host: 127.0.0.1\nport: 0\nprobe:\n  admin_listen: [\"unix:" + admin + "\"]\n"));
  Client main(server.port());
  CHECK_THAT(main.read_line().value_or(""), Contains("probe ready"));
  Client side = Client::unix_socket(admin);
  CHECK(side.read_line() == "admin on unix:" + admin);
  side.send("hello\r\n");
  CHECK(side.read_line() == "admin heard hello");
  main.send("echo still mine\r\n");
  CHECK(main.read_line() == "still mine");
}

TEST_CASE("the same address in two services or under two schemes is a configuration error", "[listen][service][config]") {
  const Outcome twice = run(binary("probe_server"), {"--listen=127.0.0.1:47111", "--probe.admin_listen=127.0.0.1:47111",
                                                     "--check-config"});
  CHECK(twice.status == 2);
  CHECK_THAT(twice.output, Contains("listen: \"127.0.0.1:47111\" and probe.admin_listen: \"127.0.0.1:47111\" are the same "
                                    "address"));
  const Outcome schemes = run(binary("echo_server"), {"--listen=tls://127.0.0.1:47112,127.0.0.1:47112", "--check-config"});
  CHECK(schemes.status == 2);
  CHECK_THAT(schemes.output, Contains("\"tls://127.0.0.1:47112\" and listen: \"127.0.0.1:47112\" are the same address"));
}

TEST_CASE("an unknown listen scheme is named with the known ones", "[listen][config][hardening]") {
  for (const std::string scheme : {"TLS", "tcp4", "ssl"}) {
    const Outcome outcome = run(binary("echo_server"), {"--listen=" + scheme + "://127.0.0.1:1", "--check-config"});
    CHECK(outcome.status == 2);
    CHECK_THAT(outcome.output, Contains("unknown scheme \"" + scheme + "://\"; known: tcp://, tls://"));
  }
  const Outcome doubled = run(binary("echo_server"), {"--listen=tls://tls://127.0.0.1:1", "--check-config"});
  CHECK(doubled.status == 2);
  CHECK_THAT(doubled.output, Contains("an address has one scheme at most"));
  const Outcome plain = run(binary("echo_server"), {"--listen=tcp://127.0.0.1:1", "--check-config"});
  CHECK(plain.status == 0);
}
