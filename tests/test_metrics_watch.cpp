// The stall watcher and the watchdog (src/stall_watch.hpp, src/watchdog.hpp): tests/stall_probe,
// whose callback blocks on command, and the watchdog's decisions on real forked processes.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "harness.hpp"
#include "metrics_engine.hpp"
#include "metrics_store.hpp"
#include "stall_watch.hpp"
#include "watchdog.hpp"

using namespace harness;
using Catch::Matchers::Contains;

namespace {

std::string peer_of(const Client& client) { return "127.0.0.1:" + std::to_string(client.local_port()); }

double number_after(const std::string& text, const std::string& marker) {
  const std::size_t at = text.find(marker);
  return at == std::string::npos ? -1 : std::stod(text.substr(at + marker.size()));
}

}  // namespace

TEST_CASE("stall watcher: a callback blocking 2 s is logged while it blocks with its session and peer "
          "and again when it returns",
          "[metrics]") {
  ServerProcess server(binary("stall_probe"), "stall_warning: 0.2\n");
  Client client(server.port());
  REQUIRE(client.send("block 2\n"));
  // Logged while it blocks: before its answer, within 2 x stall_warning of the watcher seeing it.
  REQUIRE(server.wait_for_log("has held the event loop", 1.5s));
  CHECK(client.silent_for(0s));
  const std::string log = server.log();
  CHECK_THAT(log, Contains("stall: stall_probe: on_input of session 1 (" + peer_of(client) + ") has held the event loop"));
  const double so_far = number_after(log, "has held the event loop for ");
  CHECK(so_far >= 0.2);
  CHECK(so_far < 1.0);
  CHECK(client.read_line(5s) == "done");
  REQUIRE(server.wait_for_log("returned after about ", 2s));
  const double total = number_after(server.log(), "returned after about ");
  CHECK(total > 1.5);
  CHECK(total < 3.0);
  REQUIRE(client.send("stats\n"));
  CHECK(client.read_line() == "accepted 1 stalls 1");
}

TEST_CASE("stall watcher: many short callbacks in a row are not a stall", "[metrics]") {
  ServerProcess server(binary("stall_probe"), "stall_warning: 0.2\n");
  Client client(server.port());
  for (int i = 0; i < 20; ++i) {  // 1 s of on_input of one session, 50 ms at a time
    REQUIRE(client.send("block 0.05\n"));
    REQUIRE(client.read_line() == "done");
  }
  REQUIRE(client.send("stats\n"));
  CHECK(client.read_line() == "accepted 1 stalls 0");
  CHECK(server.count_in_log("stall:") == 0);
}

TEST_CASE("watchdog: a child stuck in a callback past worker_timeout is logged with what it was doing and "
          "writes its own stack before it dies and its client is closed and nothing it counted is lost",
          "[metrics]") {
  ServerProcess server(binary("stall_probe"), "worker_timeout: 1\nstall_warning: 0\n");
  server.expect_errors();
  Client client(server.port());
  REQUIRE(client.send("block 30\n"));
  REQUIRE(server.wait_for_log("ended: killed by signal 6", 10s));
  const std::string log = server.log();
  INFO(log);
  const std::string session = "in on_input of session 1 (" + peer_of(client) + ")";
  CHECK_THAT(log, Contains("worker_timeout: probe child ") && Contains("has not turned its event loop for"));
  CHECK_THAT(log, Contains("(worker_timeout 1 s): it is " + session + " for"));
  CHECK_THAT(log, Contains("probe child got SIGABRT") && Contains("its loop was " + session));
  CHECK_THAT(log, Contains("block_in_callback"));  // its own stack, from inside the callback
  CHECK_THAT(log, Contains("totals: accepted 1 stalls 0"));
  CHECK(log.find("SIGKILL") == log.rfind("SIGKILL in"));  // no SIGKILL was needed
  CHECK(client.closed_by_peer(2s));
}

TEST_CASE("watchdog: a child that does not die of SIGABRT is SIGKILLed", "[metrics]") {
  ServerProcess server(binary("stall_probe"), "worker_timeout: 0.5\nstall_warning: 0\n");
  server.expect_errors();
  Client client(server.port());
  REQUIRE(client.send("deaf 30\n"));
  REQUIRE(server.wait_for_log("ended: killed by signal 9", 10s));
  CHECK_THAT(server.log(), Contains("still alive 2.0 s after SIGABRT: SIGKILL"));
  CHECK(server.log().find("got SIGABRT") == std::string::npos);
}

TEST_CASE("watchdog: it signals the stuck process only and not a beating one or one waiting outside its loop",
          "[metrics]") {
  netserver::MetricsSchema schema;
  auto store = netserver::MetricsStore::create(schema, 3);
  const auto spawn = [&](const std::function<void()>& body) {
    const netserver::MetricsStore::Slot slot = store->claim();
    const pid_t pid = ::fork();
    if (pid == 0) {
      store->bind_child(slot);
      body();
      ::_exit(0);
    }
    store->assign(slot, pid);
    return pid;
  };
  const pid_t beating = spawn([] {
    for (;;) {
      netserver::beat_heartbeat();
      ::usleep(20'000);
    }
  });
  const pid_t idle = spawn([] {
    netserver::pause_heartbeat();
    ::pause();
  });
  const pid_t stuck = spawn([] { ::pause(); });  // never beats after the slot was claimed
  std::vector<std::pair<pid_t, int>> sent;
  boost::asio::io_context io;
  netserver::Watchdog watchdog(
      io, *store, std::chrono::milliseconds(300),
      [&] {
        return std::vector<netserver::ProcessEntry>{{beating, "child", netserver::ProcessState::busy},
                                                    {idle, "child", netserver::ProcessState::idle},
                                                    {stuck, "child", netserver::ProcessState::busy}};
      },
      std::chrono::milliseconds(200), [&](pid_t pid, int signal) { sent.emplace_back(pid, signal); });
  CHECK(watchdog.check().empty());  // nobody is late yet
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  CHECK(watchdog.check() == std::vector<pid_t>{stuck});
  CHECK(watchdog.check().empty());  // asked once
  std::this_thread::sleep_for(std::chrono::milliseconds(250));
  watchdog.check();
  CHECK(sent == std::vector<std::pair<pid_t, int>>{{stuck, SIGABRT}, {stuck, SIGKILL}});
  for (pid_t pid : {beating, idle, stuck}) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    store->child_exited(pid);
  }
}

namespace {
std::atomic<bool> watcher_copying{false};
}  // namespace

TEST_CASE("stall watcher: a session that ends while the watcher copies it waits for the copy", "[metrics]") {
  // The watcher is held between checking the subject and copying it while the loop ends the
  // callback and destroys the subject: the destructor must wait (else, under the sanitizer build,
  // a use after free; in any build, a wrong peer in the report).
  netserver::MetricsSchema schema;
  const netserver::Counter stalls = schema.counter("stalls_total", "stalls");
  auto store = netserver::MetricsStore::create(schema, 1);
  netserver::detail::subject_copy_hook = [] {
    watcher_copying = true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  };
  netserver::StallWatcher::start({std::chrono::nanoseconds(0), std::chrono::milliseconds(4), "test", stalls});
  REQUIRE(netserver::StallWatcher::running());
  auto peer = std::make_unique<std::string>("127.0.0.1:4242 with a long peer name past short strings");
  auto subject = std::make_unique<netserver::ActivitySubject>(7, *peer);
  {
    netserver::CallbackScope scope(*subject, netserver::CallbackKind::on_input);
    while (!watcher_copying) std::this_thread::yield();
  }
  subject.reset();
  *peer = std::string(peer->size(), 'X');  // what a freed and reused session would show
  peer.reset();
  const netserver::ActivityRecord& record = *store->activity_of(::getpid());
  CHECK(eventually([&] { return record.report_session.load() == 7; }, 2s));
  netserver::StallWatcher::stop();
  netserver::detail::subject_copy_hook = nullptr;
  char text[netserver::ActivityRecord::peer_words * 8 + 1] = {};
  for (std::size_t i = 0; i < netserver::ActivityRecord::peer_words; ++i) {
    const std::uint64_t word = record.report_peer[i].load();
    std::memcpy(text + i * 8, &word, 8);
  }
  CHECK(std::string(text) == "127.0.0.1:4242 with a long peer name past short strings");
  CHECK_FALSE(netserver::StallWatcher::running());
}

namespace {

// The names of a process's threads (/proc/PID/task/*/comm).
std::vector<std::string> thread_names(pid_t pid) {
  std::vector<std::string> names;
  std::error_code error;
  for (const auto& task : std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/task", error)) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name)) names.push_back(name);
  }
  return names;
}

bool has_watcher(pid_t pid) {
  const std::vector<std::string> names = thread_names(pid);
  return std::find(names.begin(), names.end(), "stall-watch") != names.end();
}

}  // namespace

// A process serving one client at a time keeps no other client waiting on a slow callback: it is
// not warned about, and it runs no watcher thread (which costs it CPU) unless the watchdog needs
// the thread's report.
TEST_CASE("the stall watcher runs in processes serving many clients - and in one-client ones for the watchdog",
          "[metrics]") {
  const std::string prefork = "personality: prefork\nlisten: [127.0.0.1:0]\nlog_level: 3\n"
                              "prefork:\n  min_servers: 2\n  min_spare_servers: 1\n  max_spare_servers: 2\n";
  // Two clients held open: each of the two children serves one, so both engines are up.
  auto serving_children = [](const ServerProcess& server, std::vector<Client>& clients) {
    for (int i = 0; i < 2; ++i) {
      clients.emplace_back(server.port());
      REQUIRE(clients.back().read_line());
    }
    return children_of(server.pid());
  };
  SECTION("multiplex") {
    ServerProcess server(binary("probe_server"), "personality: multiplex\nlisten: [127.0.0.1:0]\nlog_level: 3\n");
    CHECK(eventually([&] { return has_watcher(server.pid()); }));
  }
  SECTION("multiplex workers") {
    ServerProcess server(binary("probe_server"),
                         "personality: multiplex\nlisten: [127.0.0.1:0]\nlog_level: 3\nmultiplex:\n  workers: 2\n");
    Client client(server.port());
    REQUIRE(client.read_line());
    for (pid_t worker : children_of(server.pid())) CHECK(eventually([&] { return has_watcher(worker); }));
  }
  SECTION("prefork children without worker_timeout") {
    ServerProcess server(binary("probe_server"), prefork);
    std::vector<Client> clients;
    const std::vector<pid_t> children = serving_children(server, clients);
    REQUIRE(children.size() >= 2);
    for (pid_t child : children) {
      INFO("child " << child);
      CHECK_FALSE(has_watcher(child));
      CHECK(thread_names(child).size() == 1);
    }
  }
  SECTION("prefork children with worker_timeout") {
    ServerProcess server(binary("probe_server"), prefork + "worker_timeout: 30\n");
    std::vector<Client> clients;
    const std::vector<pid_t> children = serving_children(server, clients);
    REQUIRE(children.size() >= 2);
    for (pid_t child : children) CHECK(eventually([&] { return has_watcher(child); }));
  }
}
