// Restart without dropping the port (SIGHUP): no refused connection across 20 restarts under a
// client that connects continuously, sessions open before a restart complete, no zombies, a broken
// configuration keeps the old server, and listen addresses added or dropped by the new one.

#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include <sys/stat.h>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

std::string yaml_for(const std::string& personality) {
  return "personality: " + personality + "\nhost: 127.0.0.1\nport: 0\ngraceful_timeout: 60\n"
         "prefork:\n  min_servers: 3\n  max_servers: 12\n  min_spare_servers: 1\n  max_spare_servers: 4\n";
}

// Sends HUP and waits until the new image says it started.
bool restart(ServerProcess& server) {
  const std::size_t before = server.count_in_log("(restarted)");
  server.signal(SIGHUP);
  return eventually([&] { return server.count_in_log("(restarted)") == before + 1; });
}

}  // namespace

TEST_CASE("20 restarts under a connecting client refuse nobody and finish the sessions open before",
          "[restart]") {
  const std::string personality = GENERATE("single", "multiplex", "prefork");
  ServerProcess server(binary("echo_server"), yaml_for(personality));
  const int port = server.port();
  Client held(port);  // open across every restart
  REQUIRE(held.read_line());

  std::atomic<bool> running{true};
  std::atomic<int> served{0}, refused{0}, unanswered{0};
  std::thread connector([&] {
    for (int attempt = 0; running && attempt < 20000; ++attempt) {
      try {
        Client client(port);
        if (client.read_line(10s)) ++served;
        else ++unanswered;
      } catch (const std::runtime_error&) {
        ++refused;
      }
    }
  });
  bool all_restarted = true;
  for (int i = 0; i < 20 && all_restarted; ++i) {
    all_restarted = restart(server);
    std::this_thread::sleep_for(30ms);
  }
  running = false;
  connector.join();

  INFO("personality " << personality);
  if (unanswered > 0) INFO("server log:\n" << server.log());
  CHECK(all_restarted);
  CHECK(refused == 0);
  CHECK(unanswered == 0);
  CHECK(served > 20);
  held.send("opened before the restarts\r\n");
  CHECK(held.read_line() == "opened before the restarts");
  held.send("quit\r\n");
  CHECK(held.closed_by_peer());
  CHECK(eventually([&] { return zombies_of(server.pid()).empty(); }));
  CHECK(server.count_in_log("restarting: exec") == 20);
}

TEST_CASE("after a restart the processes of the old image end and are waited for", "[restart]") {
  const std::string personality = GENERATE("multiplex", "prefork");
  ServerProcess server(binary("echo_server"), yaml_for(personality));
  Client held(server.port());
  REQUIRE(held.read_line());
  const std::vector<pid_t> old_children = children_of(server.pid());
  REQUIRE(restart(server));
  Client fresh(server.port());
  REQUIRE(fresh.read_line());
  held.send("quit\r\n");
  CHECK(held.closed_by_peer());
  fresh.send("quit\r\n");
  CHECK(fresh.closed_by_peer());
  // What is left: the first process (its pid stays the server's), the new image, its children.
  const std::size_t pool = personality == "prefork" ? 3 : 0;
  CHECK(eventually([&] {
    return children_of(server.pid()).size() == 1 && descendants_of(server.pid()).size() == 1 + pool &&
           zombies_of(server.pid()).empty();
  }));
  for (pid_t child : old_children) CHECK(::kill(child, 0) != 0);
}

TEST_CASE("a configuration that no longer loads keeps the old server running", "[restart]") {
  ServerProcess server(binary("echo_server"), yaml_for("multiplex"));
  server.dir().write("server.yaml", "personality: multiplex\nport: [broken\n");
  server.signal(SIGHUP);
  CHECK(server.wait_for_log("HUP: "));
  CHECK_THAT(server.log(), Contains("YAML syntax error") && Contains("the running server carries on"));
  CHECK(server.count_in_log("(restarted)") == 0);
  Client client(server.port());
  const auto banner = client.read_line();
  REQUIRE(banner);
  CHECK(pid_in(*banner) == server.pid());
  server.expect_errors();
}

TEST_CASE("a restart binds addresses the new configuration adds and closes the ones it drops", "[restart]") {
  ServerProcess server(binary("echo_server"), yaml_for("multiplex"));
  const std::string path = (server.dir().path() / "added.sock").string();
  server.dir().write("server.yaml", yaml_for("multiplex") + "listen: [\"127.0.0.1:0\", \"unix:" + path + "\"]\n");
  REQUIRE(restart(server));
  Client over_unix = Client::unix_socket(path);
  CHECK(over_unix.read_line());
  over_unix.close();
  Client over_tcp(server.port());  // the port never changed
  CHECK(over_tcp.read_line());
  over_tcp.close();

  server.dir().write("server.yaml", yaml_for("multiplex"));
  REQUIRE(restart(server));
  CHECK(server.wait_for_log("closing inherited listener unix:" + path));
  CHECK_FALSE(std::filesystem::exists(path));
  Client still(server.port());
  CHECK(still.read_line());
}

TEST_CASE("a new address the restarted image could not bind keeps the old server", "[restart]") {
  ServerProcess server(binary("echo_server"), yaml_for("multiplex"));
  server.dir().write("server.yaml", yaml_for("multiplex") + "listen: [\"127.0.0.1:0\", \"192.0.2.1:9\"]\n");
  server.signal(SIGHUP);
  CHECK(server.wait_for_log("HUP: cannot bind 192.0.2.1:9"));
  CHECK(server.count_in_log("(restarted)") == 0);
  Client client(server.port());
  CHECK(client.read_line());
  server.expect_errors();
}

TEST_CASE("systemd hears RELOADING and READY again around a restart with the same MAINPID", "[restart][systemd]") {
  TempDir dir;
  const std::string path = (dir.path() / "notify").string();
  DatagramSink notify(path);
  ServerProcess server(binary("echo_server"), yaml_for("multiplex"), Launch().with_env("NOTIFY_SOCKET", path));
  REQUIRE_THAT(notify.until("READY=1"), Contains("MAINPID=" + std::to_string(server.pid())));
  REQUIRE(restart(server));
  std::string all;
  const bool ready_again = eventually([&] {
    all = notify.received(0.05s);
    const std::size_t reloading = all.find("RELOADING=1");
    return reloading != std::string::npos && all.find("READY=1", reloading) != std::string::npos;
  });
  INFO(all);
  CHECK(ready_again);
  CHECK(all.rfind("MAINPID=" + std::to_string(server.pid())) > all.find("RELOADING=1"));
}

TEST_CASE("HUP and USR1 arriving while the server starts wait for its handlers", "[restart][signals]") {
  const std::string personality = GENERATE("multiplex", "prefork");
  ServerProcess server(binary("probe_server"), yaml_for(personality) + "probe:\n  pre_loop_delay: 0.5\n");
  REQUIRE(server.wait_for_log("hook pre_loop_hook"));  // ready and listening, handlers not yet there
  server.signal(SIGUSR1);
  server.signal(SIGHUP);
  CHECK(eventually([&] { return server.count_in_log("(restarted)") == 1; }));
  CHECK_FALSE(server.wait_exit(0.2s).has_value());
}

TEST_CASE("a program built on netserver holds HUP USR1 TTIN TTOU and CHLD before main runs", "[restart][signals]") {
  // A reload sent right after start used to kill the server in the milliseconds between exec and
  // run(): the signals are now held from the library's earliest constructor.
  ServerProcess server(binary("probe_server"), yaml_for("multiplex"), Launch{}.with_env("PROBE_SIGNAL_MASK", "1"));
  const std::string log = server.log();
  const std::size_t at = log.find("SigBlk:");
  REQUIRE(at != std::string::npos);
  const unsigned long long held = std::stoull(log.substr(at + 7), nullptr, 16);
  for (int signal : {SIGHUP, SIGUSR1, SIGTTIN, SIGTTOU, SIGCHLD}) {
    INFO("signal " << signal);
    CHECK((held >> (signal - 1) & 1) == 1);
  }
  server.signal(SIGHUP);  // and once running, each has its handler
  CHECK(eventually([&] { return server.count_in_log("(restarted)") == 1; }));
}

TEST_CASE("signals that arrive during a restart wait for the new image instead of killing it", "[restart][signals]") {
  ServerProcess server(binary("echo_server"), yaml_for("multiplex"));
  for (int i = 0; i < 5; ++i) {
    std::atomic<bool> sending{true};
    std::thread pelter([&] {  // USR1 before, during and after the exec: its default action kills
      while (sending) {
        server.signal(SIGUSR1);
        std::this_thread::sleep_for(200us);
      }
    });
    const bool restarted = restart(server);
    sending = false;
    pelter.join();
    if (!restarted) FAIL_CHECK("restart " << i << " did not happen:\n" << server.log());
    REQUIRE(restarted);
  }
  CHECK_FALSE(server.wait_exit(0.5s).has_value());  // still running
  Client client(server.port());
  CHECK(client.read_line());
}

TEST_CASE("after dropping root a restart keeps the pid file it cannot rewrite", "[restart][privileges]") {
  if (::geteuid() != 0) {
    WARN("not running as root: not tested");
    return;
  }
  TempDir dir;  // like /run: owned by root, searchable, not writable by user nobody
  ::chmod(dir.path().c_str(), 0755);
  const std::string pid_file = (dir.path() / "server.pid").string();
  ServerProcess server(binary("echo_server"), yaml_for("multiplex") + "user: nobody\npid_file: " + pid_file + "\n");
  ::chmod(server.dir().path().c_str(), 0755);  // the configuration must stay readable to user nobody
  REQUIRE(restart(server));
  CHECK(::kill(server.pid(), 0) == 0);
  std::ifstream in(pid_file);
  long pid = 0;
  in >> pid;
  CHECK(pid == server.pid());
  Client client(server.port());
  CHECK(client.read_line());
  client.close();
  CHECK(server.stop() == 0);
  CHECK(server.wait_for_log("cannot remove pid file"));  // the directory is root's: said, not hidden
}

TEST_CASE("after a HUP the old image keeps its sessions without a listener and TERM reaches every image",
          "[restart][stop]") {
  const std::string personality = GENERATE("single", "multiplex");
  ServerProcess server(binary("echo_server"), "personality: " + personality +
                                                  "\nhost: 127.0.0.1\nport: 0\ngraceful_timeout: 1\n");
  Client held(server.port());
  REQUIRE(held.read_line());
  REQUIRE(restart(server));
  REQUIRE(server.wait_for_log("session(s) of the previous image"));
  // The first image keeps its pid (pid file, systemd's MAINPID) and its session; the new image,
  // its child, holds the port.
  const std::vector<pid_t> images = children_of(server.pid());
  REQUIRE(images.size() == 1);
  CHECK(eventually([&] { return !holds_listener(server.pid(), server.port()); }));
  CHECK(holds_listener(images.front(), server.port()));
  Client fresh(server.port());
  const auto banner = fresh.read_line();
  REQUIRE(banner);
  CHECK(pid_in(*banner) == images.front());
  held.send("still served\r\n");
  CHECK(held.read_line() == "still served");
  server.signal(SIGTERM);
  CHECK(server.wait_exit(10s) == 0);  // after every image, which end their sessions within graceful_timeout
  CHECK(held.closed_by_peer(1s));
  CHECK(::kill(images.front(), 0) != 0);
  CHECK(refuses_connections(server.port()));
}

// Issue 19.2: the new image starts beside the old one, which lets go only once the new one serves.
TEST_CASE("a new image that exits before it serves leaves the running server serving and says why",
          "[restart][hardening]") {
  const std::string personality = GENERATE("single", "multiplex", "prefork", "workers", "fork");
  TempDir dir;
  const std::filesystem::path program = dir.path() / "echo_server";
  std::filesystem::copy_file(binary("echo_server"), program);
  const std::string yaml = personality == "workers" ? yaml_for("multiplex") + "multiplex:\n  workers: 2\n"
                                                    : yaml_for(personality);
  ServerProcess server(program.string(), yaml);
  server.expect_errors();
  Client held(server.port());
  REQUIRE(held.read_line());
  // A package upgrade that went wrong: the executable is now one that fails at once.
  dir.write("broken", "#!/bin/sh\nexit 1\n");
  ::chmod((dir.path() / "broken").c_str(), 0755);
  std::filesystem::rename(dir.path() / "broken", program);
  server.signal(SIGHUP);
  INFO(personality);
  if (!server.wait_for_log("exited with status 1 before it was ready; the running server carries on"))
    FAIL(server.log());
  CHECK_FALSE(server.wait_exit(0.3s).has_value());
  held.send("still served\r\n");
  CHECK(held.read_line() == "still served");
  held.send("quit\r\n");
  CHECK(held.closed_by_peer());
  Client after(server.port());  // (single serves one client at a time)
  CHECK(after.read_line(5s));
  after.close();
  // Fixed again: the next HUP restarts.
  std::filesystem::copy_file(binary("echo_server"), dir.path() / "fixed");
  std::filesystem::rename(dir.path() / "fixed", program);
  CHECK(restart(server));
  Client fresh(server.port());
  CHECK(fresh.read_line(5s));
}

// A TERM that arrives while the first image hands over -- its loop ending, its relay not yet
// watching -- must still stop the server: signals wait in the kernel between two watchers, they
// are never held by one that is going away.
TEST_CASE("TERM sent at the moment the first image lets go after a HUP stops every image",
          "[restart][stop][hardening]") {
  const std::string personality = GENERATE("multiplex", "prefork", "fork");
  for (int attempt = 0; attempt < 12; ++attempt) {
    ServerProcess server(binary("echo_server"), yaml_for(personality));
    server.signal(SIGHUP);
    REQUIRE(eventually([&] { return server.count_in_log("serves; this one lets go") == 1; }, 10s));
    std::this_thread::sleep_for(std::chrono::microseconds(250 * attempt));  // across the hand-over's window
    server.signal(SIGTERM);
    INFO(personality << ", attempt " << attempt);
    const std::optional<int> status = server.wait_exit(10s);
    REQUIRE(status.has_value());  // without: the harness kills it, and reports what it left behind
    CHECK(*status == 0);
  }
}

TEST_CASE("a new image that never reports ready is killed after restart_timeout and the old one serves on",
          "[restart][hardening]") {
  TempDir dir;
  const std::filesystem::path program = dir.path() / "echo_server";
  std::filesystem::copy_file(binary("echo_server"), program);
  ServerProcess server(program.string(), yaml_for("multiplex") + "restart_timeout: 0.5\n");
  server.expect_errors();
  dir.write("stuck", "#!/bin/sh\nexec sleep 30\n");
  ::chmod((dir.path() / "stuck").c_str(), 0755);
  std::filesystem::rename(dir.path() / "stuck", program);
  server.signal(SIGHUP);
  REQUIRE(server.wait_for_log("did not report ready within restart_timeout (0.5 s); killed"));
  CHECK(eventually([&] { return children_of(server.pid()).empty(); }));  // killed and reaped
  Client client(server.port());
  const auto banner = client.read_line(5s);
  REQUIRE(banner);
  CHECK(pid_in(*banner) == server.pid());
}

TEST_CASE("when the image serving after a HUP dies on its own the first one exits non-zero and says so",
          "[restart][hardening]") {
  ServerProcess server(binary("echo_server"), yaml_for("multiplex"));
  server.expect_errors();
  REQUIRE(restart(server));
  REQUIRE(eventually([&] { return children_of(server.pid()).size() == 1; }));
  const pid_t serving = children_of(server.pid()).front();
  REQUIRE(server.wait_for_log("relays signals to pid " + std::to_string(serving)));
  ::kill(serving, SIGKILL);
  const std::optional<int> status = server.wait_exit(10s);
  REQUIRE(status.has_value());
  CHECK(*status == 1);
  CHECK(server.wait_for_log("on its own: the server is down"));
}

TEST_CASE("sessions kept across a HUP outlive graceful_timeout unless restart_drain_timeout ends them",
          "[restart]") {
  const std::string personality = GENERATE("single", "multiplex");
  const std::string drain = GENERATE(std::string(""), std::string("restart_drain_timeout: 0.5\n"));
  ServerProcess server(binary("echo_server"), "personality: " + personality +
                                                  "\nhost: 127.0.0.1\nport: 0\ngraceful_timeout: 0.3\n" + drain);
  Client held(server.port());
  REQUIRE(held.read_line());
  REQUIRE(restart(server));
  REQUIRE(server.wait_for_log("session(s) of the previous image"));
  if (drain.empty()) {
    CHECK(held.silent_for(1.5s));  // not cut after graceful_timeout
    held.send("still served\r\n");
    CHECK(held.read_line() == "still served");
  } else {
    CHECK(held.closed_by_peer(3s));
    CHECK(server.wait_for_log("cutting 1 session(s) still open after 0.5 s"));
  }
}

// A stop asked for right after start-up (systemd stopping a unit it has just started, a test's
// TERM after "listening on") used to kill the half-started server with its default action,
// leaving its pid file behind; now the loop carries it out.
TEST_CASE("TERM arriving while the server starts is a graceful stop once the loop runs", "[restart][signals]") {
  const std::string personality = GENERATE("single", "multiplex", "prefork");
  ServerProcess server(binary("probe_server"), yaml_for(personality) + "probe:\n  pre_loop_delay: 0.5\n");
  REQUIRE(server.wait_for_log("hook pre_loop_hook"));  // listening, handlers not yet there
  server.signal(SIGTERM);
  const std::optional<int> status = server.wait_exit(10s);
  REQUIRE(status.has_value());
  CHECK(*status == 0);
  CHECK(server.wait_for_log("TERM received"));
}
