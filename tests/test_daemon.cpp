// Daemon mode, the pid file (live, stale, empty, removed at exit) and dropping root.

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <thread>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

long read_pid(const std::filesystem::path& file) {
  long pid = -1;
  std::ifstream(file) >> pid;
  return pid;
}

bool alive(long pid) { return pid > 0 && ::kill(static_cast<pid_t>(pid), 0) == 0; }

// A server started in the background: not our child, so it is stopped by the pid it wrote.
class Daemon {
 public:
  Daemon(const TempDir& dir, const std::vector<std::string>& extra = {}) : dir_(dir) {
    std::vector<std::string> args{"--background", "--host=127.0.0.1", "--port=0", "--log_level=3",
                                  "--pid_file=" + pid_file().string(), "--log_file=" + log_file().string()};
    args.insert(args.end(), extra.begin(), extra.end());
    launch = run(binary("echo_server"), args);
    pid = read_pid(pid_file());
  }
  ~Daemon() { stop(); }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  std::filesystem::path pid_file() const { return dir_.path() / "server.pid"; }
  std::filesystem::path log_file() const { return dir_.path() / "server.log"; }
  std::string log() const {
    std::ifstream in(log_file());
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  int port() const {
    const std::string text = log();
    const std::size_t at = text.find("listening on 127.0.0.1:");
    return at == std::string::npos ? -1 : std::stoi(text.substr(at + 23));
  }
  bool stop() {
    if (!alive(pid)) return true;
    ::kill(static_cast<pid_t>(pid), SIGTERM);
    return eventually([&] { return !alive(pid); });
  }

  Outcome launch;
  long pid = -1;

 private:
  const TempDir& dir_;
};

}  // namespace

TEST_CASE("background: the launcher returns once the daemon serves and the pid file names it", "[daemon]") {
  TempDir dir;
  Daemon daemon(dir);
  CHECK(daemon.launch.status == 0);
  REQUIRE(alive(daemon.pid));
  CHECK(daemon.pid != ::getpid());
  CHECK(::getsid(static_cast<pid_t>(daemon.pid)) == daemon.pid);  // its own session: no terminal
  Client client(daemon.port());
  const auto banner = client.read_line();
  REQUIRE(banner);
  CHECK(pid_in(*banner) == daemon.pid);
  client.close();
  CHECK(daemon.stop());
  CHECK_FALSE(std::filesystem::exists(daemon.pid_file()));  // removed at exit
  CHECK_THAT(daemon.log(), Contains("detached into the background") && Contains("echo stopped"));
}

TEST_CASE("the pid file: a live one refuses the start and a stale or empty one is replaced", "[daemon][pid_file]") {
  TempDir dir;
  const std::string pid_file = (dir.path() / "server.pid").string();
  auto start = [&] {
    return run(binary("echo_server"), {"--host=127.0.0.1", "--port=0", "--pid_file=" + pid_file, "--check-config"});
  };
  SECTION("live") {
    dir.write("server.pid", std::to_string(::getpid()) + "\n");  // this test process is alive
    const Outcome outcome = run(binary("echo_server"), {"--host=127.0.0.1", "--port=0", "--pid_file=" + pid_file});
    CHECK(outcome.status == 1);
    CHECK_THAT(outcome.output, Contains("pid file " + pid_file + " names a running process (" + std::to_string(::getpid())));
    CHECK_THAT(outcome.output, !Contains("listening on"));  // refused before binding
  }
  SECTION("stale") {
    const pid_t gone = ::fork();
    if (gone == 0) ::_exit(0);
    ::waitpid(gone, nullptr, 0);
    dir.write("server.pid", std::to_string(gone) + "\n");
    ServerProcess server(binary("echo_server"), "host: 127.0.0.1\nport: 0\npid_file: " + pid_file + "\n");
    CHECK(server.wait_for_log("names process " + std::to_string(gone) + ", which is gone"));
    CHECK(eventually([&] { return read_pid(pid_file) == server.pid(); }));  // written after "listening on"
    CHECK(server.stop() == 0);
    CHECK_FALSE(std::filesystem::exists(pid_file));
  }
  SECTION("empty") {
    dir.write("server.pid", "");
    ServerProcess server(binary("echo_server"), "host: 127.0.0.1\nport: 0\npid_file: " + pid_file + "\n");
    CHECK(server.wait_for_log("is empty or does not hold a pid; it will be replaced"));
    CHECK(eventually([&] { return read_pid(pid_file) == server.pid(); }));  // written after "listening on"
  }
  CHECK(start().status == 0);  // --check-config never touches the pid file
}

TEST_CASE("a pid file that cannot be written is refused before binding", "[daemon][pid_file][hardening]") {
  TempDir dir;
  for (const std::string& pid_file : {(dir.path() / "missing" / "server.pid").string(), dir.path().string()}) {
    const Outcome outcome = run(binary("echo_server"), {"--host=127.0.0.1", "--port=0", "--pid_file=" + pid_file});
    INFO(outcome.output);
    CHECK(outcome.status == 1);
    CHECK_THAT(outcome.output, !Contains("listening on"));
  }
  CHECK_THAT(run(binary("echo_server"), {"--host=127.0.0.1", "--port=0", "--pid_file=" + (dir.path() / "missing" / "s.pid").string()}).output,
             Contains("pid_file: cannot open the directory of " + (dir.path() / "missing" / "s.pid").string() +
                      ": No such file or directory"));
  CHECK_THAT(run(binary("echo_server"), {"--host=127.0.0.1", "--port=0", "--pid_file=" + dir.path().string()}).output,
             Contains("pid_file: " + dir.path().string() + " is a directory"));
}

TEST_CASE("a pid past pid_t in the pid file is not read as another pid", "[daemon][pid_file][hardening]") {
  TempDir dir;
  const std::string pid_file = (dir.path() / "server.pid").string();
  dir.write("server.pid", "4294967297\n");  // 2^32 + 1: pid 1 once truncated to 32 bits
  ServerProcess server(binary("echo_server"), "host: 127.0.0.1\nport: 0\npid_file: " + pid_file + "\n");
  CHECK(server.wait_for_log("pid file " + pid_file + " is empty or does not hold a pid; it will be replaced"));
  CHECK(eventually([&] { return read_pid(pid_file) == server.pid(); }));  // written after "listening on"
}

TEST_CASE("background needs a log that survives detaching", "[daemon]") {
  const Outcome outcome = run(binary("echo_server"), {"--background"});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains("background: true needs log_file set to a file or syslog"));
}

TEST_CASE("a daemon that fails after detaching says so on the terminal", "[daemon]") {
  TempDir dir;
  // A group id nobody can switch to unless root; as root, a chroot into a missing directory.
  const std::string failing = ::geteuid() == 0 ? "--chroot=/no/such/directory" : "--group=0";
  Daemon daemon(dir, {failing});
  CHECK(daemon.launch.status == 1);
  CHECK_THAT(daemon.launch.output, Contains(::geteuid() == 0 ? "cannot chroot to /no/such/directory" : "not running as root"));
  CHECK_FALSE(std::filesystem::exists(daemon.pid_file()));
}

TEST_CASE("started as root the server drops to user and group after binding", "[daemon][privileges]") {
  if (::geteuid() != 0) {
    WARN("not running as root: privilege drop not tested");
    return;
  }
  TempDir dir;
  REQUIRE(::chown(dir.path().c_str(), 65534, 65534) == 0);  // a pid file directory the user can write
  const std::string pid_file = (dir.path() / "server.pid").string();
  ServerProcess server(binary("echo_server"),
                       "host: 127.0.0.1\nport: 0\nuser: nobody\ngroup: nogroup\npid_file: " + pid_file + "\n");
  CHECK(server.wait_for_log("running as uid 65534, gid 65534"));
  std::ifstream status("/proc/" + std::to_string(server.pid()) + "/status");
  std::string line, uid, gid;
  while (std::getline(status, line)) {
    if (line.starts_with("Uid:")) uid = line;
    if (line.starts_with("Gid:")) gid = line;
  }
  CHECK(uid == "Uid:\t65534\t65534\t65534\t65534");
  CHECK(gid == "Gid:\t65534\t65534\t65534\t65534");
  struct stat info {};
  REQUIRE(::stat(pid_file.c_str(), &info) == 0);
  CHECK(info.st_uid == 65534);  // handed over, so the server can remove it
  Client client(server.port());
  CHECK(client.read_line());
  client.close();
  CHECK(server.stop() == 0);
  CHECK_FALSE(std::filesystem::exists(pid_file));
}

TEST_CASE("an unknown user is an error before anything is bound", "[daemon][privileges]") {
  const Outcome outcome = run(binary("echo_server"), {"--user=no-such-user-here", "--port=0"});
  CHECK(outcome.status == 2);
  CHECK_THAT(outcome.output, Contains("user: there is no user 'no-such-user-here' on this system"));
  CHECK_THAT(outcome.output, !Contains("listening on"));
}

TEST_CASE("of two daemons started at once with one pid file exactly one runs", "[daemon][pid_file][hardening]") {
  for (int trial = 0; trial < 5; ++trial) {
    TempDir dir;
    const std::string pid_file = (dir.path() / "server.pid").string();
    auto start = [&](const std::string& name) {
      return run(binary("echo_server"), {"--background", "--host=127.0.0.1", "--port=0", "--pid_file=" + pid_file,
                                         "--log_file=" + (dir.path() / (name + ".log")).string()});
    };
    Outcome first, second;
    std::thread other([&] { second = start("b"); });
    first = start("a");
    other.join();
    const long pid = read_pid(pid_file);
    INFO("trial " << trial << "\nfirst: " << first.output << "\nsecond: " << second.output);
    CHECK(((first.status == 0) != (second.status == 0)));  // one wins, one exits non-zero
    const Outcome& loser = first.status == 0 ? second : first;
    CHECK(loser.status == 1);
    CHECK_THAT(loser.output, Contains("locked by another server") || Contains("names a running process"));
    REQUIRE(alive(pid));
    ::kill(static_cast<pid_t>(pid), SIGTERM);
    CHECK(eventually([&] { return !alive(pid); }));
  }
}
