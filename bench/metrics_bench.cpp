// metrics_bench: what the metrics cost. Several runs of each, median and spread (min..max):
//   counter   ns per Counter::add on a slot of the shared table
//   gauge     ns per Gauge::add
//   mark      ns per callback marked (a CallbackScope: entered and left)
//   totals    CPU per MetricsStore::totals() over 9 live slots (the sums a page starts from)
//   render    CPU per /metrics page rendered in-process: the toolkit's full label set for 4
//             listeners, 16 application series, 8 live worker slots, /proc read for 9 processes
//   scrape    server CPU per GET /metrics over keep-alive HTTP from tests/metrics_probe with 8
//             live helper processes (read from /proc/PID/stat around 2000 scrapes)
//
//   metrics_bench [--runs N] [--probe PATH]     (PATH: build/tests/metrics_probe; no scrape without)

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "metrics_children.hpp"  // tests/
#include "metrics_engine.hpp"
#include "metrics_exposition.hpp"
#include "metrics_store.hpp"
#include "stall_watch.hpp"

extern char** environ;

namespace {

using namespace netserver;

struct Figure {
  std::string name;
  std::string unit;
  std::vector<double> runs;
};

void report(Figure figure) {
  std::sort(figure.runs.begin(), figure.runs.end());
  const double median = figure.runs[figure.runs.size() / 2];
  fmt::print("{:<8} median {:>9.2f} {:<11} spread {:.2f} .. {:.2f} ({} runs)\n", figure.name, median, figure.unit,
             figure.runs.front(), figure.runs.back(), figure.runs.size());
}

double cpu_seconds() {
  timespec now{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + now.tv_nsec / 1e9;
}

// ns per call of `body`, timed over `calls` calls.
double ns_per_call(std::uint64_t calls, const std::function<void(std::uint64_t)>& body) {
  const auto start = std::chrono::steady_clock::now();
  body(calls);
  return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() / calls;
}

void bench_in_process(int runs) {
  MetricsSchema& schema = MetricsSchema::global();
  register_engine_metrics(schema, {"127.0.0.1:8000", "[::1]:8000", "tls://127.0.0.1:8443", "unix:/run/app.sock"});
  std::vector<Gauge> rooms;
  for (int i = 0; i < 8; ++i) {
    schema.counter("chat_messages_relayed_total", "chat lines passed on", {{"room", fmt::format("room{}", i)}});
    rooms.push_back(schema.gauge("chat_room_members", "clients in a room", {{"room", fmt::format("room{}", i)}}));
  }
  auto store = MetricsStore::create(schema, 8);
  const Counter counter = engine_metrics().received_bytes;
  const Gauge gauge = engine_metrics().sessions_open;
  const std::uint64_t calls = 200'000'000;

  Figure counters{"counter", "ns/add", {}}, gauges{"gauge", "ns/add", {}}, marks{"mark", "ns/callback", {}};
  for (int run = 0; run < runs; ++run) {
    counters.runs.push_back(ns_per_call(calls, [&](std::uint64_t n) {
      for (std::uint64_t i = 0; i < n; ++i) counter.add(i & 7);
    }));
    gauges.runs.push_back(ns_per_call(calls, [&](std::uint64_t n) {
      for (std::uint64_t i = 0; i < n; ++i) gauge.add((i & 1) ? 1 : -1);
    }));
    const ActivitySubject subject(42, "127.0.0.1:5555");
    marks.runs.push_back(ns_per_call(calls / 2, [&](std::uint64_t n) {
      for (std::uint64_t i = 0; i < n; ++i) {
        CallbackScope scope(subject, CallbackKind::on_input);
        asm volatile("" ::: "memory");  // the callback's body
      }
    }));
  }
  report(counters);
  report(gauges);
  report(marks);

  metrics_test::SlotChildren workers(*store);
  for (int i = 0; i < 8; ++i)
    workers.spawn([i] {
      for (const Counter& accepted : engine_metrics().accepted) accepted.add(static_cast<std::uint64_t>(i + 1));
      engine_metrics().sessions_open.add(3);
    });
  StatusInput input{*store, engine_metrics(), "bench", "0.2.0", "multiplex", {{::getpid(), "parent", ProcessState::busy}}};
  for (pid_t pid : workers.alive()) input.processes.push_back({pid, "worker", ProcessState::idle});
  Figure sums{"totals", "us CPU/call", {}};
  for (int run = 0; run < runs; ++run) {
    const int calls = 3000;
    const double start = cpu_seconds();
    for (int i = 0; i < calls; ++i) store->totals();
    sums.runs.push_back((cpu_seconds() - start) / calls * 1e6);
  }
  report(sums);
  fmt::print("         {} cells per slot, {} slots live\n", store->series().size() + 1, workers.alive().size() + 1);
  Figure render{"render", "us CPU/page", {}};
  for (int run = 0; run < runs; ++run) {
    const int pages = 300;
    const double start = cpu_seconds();
    for (int i = 0; i < pages; ++i) render_prometheus(input);
    render.runs.push_back((cpu_seconds() - start) / pages * 1e6);
  }
  report(render);
  const std::string page = render_prometheus(input);
  fmt::print("         a page: {} bytes, {} lines\n", page.size(), std::count(page.begin(), page.end(), '\n'));
}

double process_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text;
  std::getline(in, text);
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::vector<std::string> field;
  for (std::string one; fields >> one;) field.push_back(one);
  return (std::stod(field[11]) + std::stod(field[12])) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// Reads one HTTP response (headers, then Content-Length bytes) from `fd`.
bool read_response(int fd, std::string& buffer) {
  for (;;) {
    const std::size_t end = buffer.find("\r\n\r\n");
    if (end != std::string::npos) {
      const std::size_t at = buffer.find("Content-Length: ");
      const std::size_t length = std::stoul(buffer.substr(at + 16));
      if (buffer.size() >= end + 4 + length) {
        buffer.erase(0, end + 4 + length);
        return true;
      }
    }
    char chunk[65536];
    const ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n <= 0) return false;
    buffer.append(chunk, static_cast<std::size_t>(n));
  }
}

void bench_scrape(int runs, const std::string& probe) {
  int output[2];
  if (::pipe(output) != 0) return;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, output[1], STDERR_FILENO);
  std::vector<std::string> args{probe, "--listen=127.0.0.1:0", "--status.listen=127.0.0.1:0", "--probe.live_helpers=8"};
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (::posix_spawn(&pid, probe.c_str(), &actions, nullptr, argv.data(), environ) != 0) {
    fmt::print("scrape: cannot start {}\n", probe);
    return;
  }
  ::close(output[1]);
  std::string log;
  int port = 0;
  while (port == 0) {
    char chunk[4096];
    const ssize_t n = ::read(output[0], chunk, sizeof chunk);
    if (n <= 0) break;
    log.append(chunk, static_cast<std::size_t>(n));
    const std::string_view line = "status listener on 127.0.0.1:";
    const std::size_t at = log.find(line);
    if (at != std::string::npos && log.find('\n', at) != std::string::npos)
      port = std::stoi(log.substr(at + line.size()));
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (port == 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    fmt::print("scrape: the probe did not answer; its log:\n{}\n", log);
  } else {
    const std::string request = "GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n";
    std::string buffer;
    Figure scrape{"scrape", "us CPU/req", {}};
    for (int run = 0; run < runs; ++run) {
      const int scrapes = 2000;
      const double start = process_cpu_seconds(pid);
      for (int i = 0; i < scrapes; ++i)
        if (::write(fd, request.data(), request.size()) < 0 || !read_response(fd, buffer)) return;
      scrape.runs.push_back((process_cpu_seconds(pid) - start) / scrapes * 1e6);
    }
    report(scrape);
  }
  ::close(fd);
  ::kill(pid, SIGTERM);
  ::waitpid(pid, nullptr, 0);
  ::close(output[0]);
}

}  // namespace

int main(int argc, char** argv) {
  int runs = 7;
  std::string probe;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--runs") == 0) runs = std::max(1, std::atoi(argv[i + 1]));
    if (std::strcmp(argv[i], "--probe") == 0) probe = argv[i + 1];
  }
  bench_in_process(runs);
  if (!probe.empty()) bench_scrape(runs, probe);
  return 0;
}
