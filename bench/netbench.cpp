// netbench: the load generator for netserver and its peers. One thread and one epoll instance
// drive every connection; each connection's buffers are allocated once, never per message.
//
//   netbench echo    --port P --connections N --size S --duration D   closed-loop round trips
//   netbench chat    --port P --connections N --size S --duration D   broadcast rounds
//   netbench join    --port P --connections N                         join storm: N chat clients at once
//   netbench broadcast --port P --connections N --senders S --duration D   S senders in a room of N
//   netbench connect --port P --connections C --duration D            connect, banner, echo, close
//                    [--proxy v1|v2]                                 ... each connection first sending a PROXY header
//   netbench idle    --port P --connections N --server-pid PID        memory per idle connection
//   netbench pids    --port P --connections N                         which process serves whom
//
// Each prints one result line of key=value pairs (or JSON with --json).

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "histogram.hpp"
#include "protocol.hpp"

namespace {

using Clock = std::chrono::steady_clock;

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count());
}

[[noreturn]] void die(const std::string& message) {
  std::fprintf(stderr, "netbench: %s\n", message.c_str());
  std::exit(2);
}

// --- options and results -------------------------------------------------------------------

struct Options {
  std::string mode;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::size_t connections = 1;
  std::size_t senders = 0;  // chat, broadcast: clients sending each round (0: every client)
  std::size_t size = 64;
  double duration = 3;
  double timeout = 5;  // a round or a banner that takes longer counts as never coming
  pid_t server_pid = 0;
  std::string proxy;    // connect: "v1" or "v2": a PROXY header first, as a load balancer sends it
  int port2 = 0;        // chat: every second client connects here (a second server on one bus)
  pid_t server_pid2 = 0;  // ... and this server's CPU counts too
  bool json = false;
};

Options parse_options(int argc, char** argv) {
  if (argc < 2) die("usage: netbench echo|chat|join|broadcast|connect|idle|pids [--host H] [--port P] "
                    "[--connections N] [--senders S] [--size BYTES] [--duration S] [--timeout S] [--server-pid PID] "
                    "[--port2 P --server-pid2 PID] [--json]");
  Options options;
  options.mode = argv[1];
  for (int i = 2; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--json") {
      options.json = true;
      continue;
    }
    if (i + 1 >= argc) die("missing value for " + flag);
    const std::string value = argv[++i];
    try {
      if (flag == "--host") options.host = value;
      else if (flag == "--port") options.port = std::stoi(value);
      else if (flag == "--connections") options.connections = std::stoul(value);
      else if (flag == "--size") options.size = std::stoul(value);
      else if (flag == "--senders") options.senders = std::stoul(value);
      else if (flag == "--duration") options.duration = std::stod(value);
      else if (flag == "--timeout") options.timeout = std::stod(value);
      else if (flag == "--server-pid") options.server_pid = std::stoi(value);
      else if (flag == "--port2") options.port2 = std::stoi(value);
      else if (flag == "--proxy") options.proxy = value;
      else if (flag == "--server-pid2") options.server_pid2 = std::stoi(value);
      else die("unknown option " + flag);
    } catch (const std::logic_error&) {
      die("bad value for " + flag + ": " + value);
    }
  }
  if (options.connections == 0) die("--connections must be at least 1");
  if (!options.proxy.empty() && options.proxy != "v1" && options.proxy != "v2") die("--proxy takes v1 or v2");
  if (options.senders == 0 || options.senders > options.connections) options.senders = options.connections;
  return options;
}

// One result line: "mode=echo connections=50 rps=..." or the same as JSON.
class Result {
 public:
  explicit Result(std::string mode) { add("mode", std::move(mode)); }
  Result& add(const std::string& key, std::string value) {
    fields_.emplace_back(key, std::move(value));
    return *this;
  }
  Result& add(const std::string& key, double value, int decimals = 1) {
    char text[64];
    std::snprintf(text, sizeof text, "%.*f", decimals, value);
    return add(key, std::string(text));
  }
  void print(bool json) const {
    std::string line = json ? "{" : "";
    for (std::size_t i = 0; i < fields_.size(); ++i) {
      const auto& [key, value] = fields_[i];
      const bool number = !value.empty() && value.find_first_not_of("0123456789.-") == std::string::npos;
      if (json) line += (i ? ", \"" : "\"") + key + "\": " + (number ? value : "\"" + value + "\"");
      else line += (i ? " " : "") + key + "=" + value;
    }
    std::printf("%s%s\n", line.c_str(), json ? "}" : "");
  }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

void add_latency(Result& result, const bench::Histogram& histogram, const std::string& prefix) {
  result.add(prefix + "p50_us", static_cast<double>(histogram.percentile(0.50)) / 1000.0)
      .add(prefix + "p99_us", static_cast<double>(histogram.percentile(0.99)) / 1000.0)
      .add(prefix + "p999_us", static_cast<double>(histogram.percentile(0.999)) / 1000.0);
}

// --- processes -----------------------------------------------------------------------------

// utime + stime of one process, in seconds (0 when unknown); sets `ppid` when asked.
double process_cpu_seconds(const std::string& pid, pid_t* ppid = nullptr) {
  std::ifstream in("/proc/" + pid + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::size_t close = text.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string field;
  double ticks = 0;
  for (int i = 3; fields >> field && i <= 15; ++i) {
    if (i == 4 && ppid) *ppid = std::stoi(field);
    if (i == 14 || i == 15) ticks += std::stod(field);
  }
  return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

// CPU seconds of a server and its direct children (a PreFork pool), 0 without a pid.
double cpu_seconds(pid_t pid) {
  if (pid <= 0) return 0;
  double total = process_cpu_seconds(std::to_string(pid));
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    pid_t ppid = 0;
    const double seconds = process_cpu_seconds(name, &ppid);
    if (ppid == pid) total += seconds;
  }
  return total;
}

// VmRSS of a process, in KiB.
long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
  return -1;
}

// CPU time this process used so far (user + system), in seconds.
double own_cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

void raise_descriptor_limit() {
  rlimit limit{};
  ::getrlimit(RLIMIT_NOFILE, &limit);
  limit.rlim_cur = limit.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &limit);
}

// --- connections ---------------------------------------------------------------------------

// A non-blocking TCP connection in progress. Connections to 127.0.0.1 come from 127.0.0.1 to
// 127.0.0.250 in turn: with few source addresses, a connect storm runs out of ephemeral ports
// (TIME_WAIT: 60 s of 20,000 connections a second is 1.2 million, 16 addresses held 450,000) and
// the kernel's port search, not the server, sets the pace.
int start_connect(const Options& options, int port = 0) {
  static unsigned next_source = 0;
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die(std::string("socket(): ") + std::strerror(errno));
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (options.host == "127.0.0.1") {
    ::setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    sockaddr_in source{};
    source.sin_family = AF_INET;
    source.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (next_source++ % 250));
    ::bind(fd, reinterpret_cast<sockaddr*>(&source), sizeof source);
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<std::uint16_t>(port ? port : options.port));
  if (::inet_pton(AF_INET, options.host.c_str(), &address.sin_addr) != 1) die("--host must be an IPv4 address");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 && errno != EINPROGRESS)
    die(std::string("connect(): ") + std::strerror(errno));
  return fd;
}

// One connection's state. Buffers are sized once, from the mode's needs.
struct Conn {
  int fd = -1;
  std::uint64_t id = 0;
  std::uint64_t seq = 0;         // echo: the request in flight
  std::uint64_t sent_at = 0;     // when the request in flight was sent
  std::uint64_t completed = 0;
  std::uint64_t got = 0;         // chat: deliveries of the current round
  bool connected = false;
  bool greeted = false;          // some line (the banner) arrived
  std::unique_ptr<char[]> in;
  std::size_t in_capacity = 0;
  std::size_t in_length = 0;
  std::unique_ptr<char[]> out;   // the request being written
  std::size_t out_capacity = 0;
  std::size_t out_length = 0;
  std::size_t out_sent = 0;

  void allocate(std::size_t in_bytes, std::size_t out_bytes) {
    in = std::make_unique_for_overwrite<char[]>(in_bytes);
    in_capacity = in_bytes;
    out = std::make_unique_for_overwrite<char[]>(out_bytes);
    out_capacity = out_bytes;
  }
};

class Loop {
 public:
  Loop() : epoll_(::epoll_create1(EPOLL_CLOEXEC)) {}
  ~Loop() { ::close(epoll_); }
  void add(Conn& conn, std::uint32_t events) { control(EPOLL_CTL_ADD, conn, events); }
  void modify(Conn& conn, std::uint32_t events) { control(EPOLL_CTL_MOD, conn, events); }
  void remove(Conn& conn) { ::epoll_ctl(epoll_, EPOLL_CTL_DEL, conn.fd, nullptr); }
  // Waits up to `timeout_ms` and calls on_event(conn, events) for each ready connection.
  template <class F>
  void wait(int timeout_ms, F&& on_event) {
    const int ready = ::epoll_wait(epoll_, events_, max_events, timeout_ms);
    for (int i = 0; i < ready; ++i) on_event(*static_cast<Conn*>(events_[i].data.ptr), events_[i].events);
  }

 private:
  void control(int operation, Conn& conn, std::uint32_t events) {
    epoll_event event{};
    event.events = events;
    event.data.ptr = &conn;
    if (::epoll_ctl(epoll_, operation, conn.fd, &event) != 0) die(std::string("epoll_ctl(): ") + std::strerror(errno));
  }
  static constexpr int max_events = 512;
  int epoll_;
  epoll_event events_[max_events];
};

// Writes what is left of conn.out; true when all of it went out.
bool write_pending(Conn& conn) {
  while (conn.out_sent < conn.out_length) {
    const ssize_t n = ::send(conn.fd, conn.out.get() + conn.out_sent, conn.out_length - conn.out_sent, MSG_NOSIGNAL);
    if (n < 0) return false;  // EAGAIN: EPOLLOUT finishes it; other errors show up on read
    conn.out_sent += static_cast<std::size_t>(n);
  }
  return true;
}

// Reads what is available and calls on_line(conn, line) for each complete line (without its
// line end). Returns false when the connection closed.
template <class F>
bool read_lines(Conn& conn, F&& on_line) {
  for (;;) {
    if (conn.in_length == conn.in_capacity) conn.in_length = 0;  // a line longer than the buffer: dropped
    const ssize_t n = ::recv(conn.fd, conn.in.get() + conn.in_length, conn.in_capacity - conn.in_length, 0);
    if (n == 0) return false;
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK;
    conn.in_length += static_cast<std::size_t>(n);
    std::size_t start = 0;
    for (;;) {
      const void* found = std::memchr(conn.in.get() + start, '\n', conn.in_length - start);
      if (!found) break;
      const std::size_t end = static_cast<std::size_t>(static_cast<const char*>(found) - conn.in.get());
      std::size_t length = end - start;
      if (length > 0 && conn.in[start + length - 1] == '\r') --length;
      conn.greeted = true;
      on_line(conn, std::string_view(conn.in.get() + start, length));
      start = end + 1;
    }
    std::memmove(conn.in.get(), conn.in.get() + start, conn.in_length - start);
    conn.in_length -= start;
    if (static_cast<std::size_t>(n) < conn.in_capacity) return true;  // drained
  }
}

// Opens `count` connections and waits until each is connected (or `timeout` passes).
std::vector<Conn> connect_all(const Options& options, Loop& loop, std::size_t count, std::size_t in_bytes,
                              std::size_t out_bytes) {
  std::vector<Conn> conns(count);
  for (std::size_t i = 0; i < count; ++i) {
    conns[i].fd = start_connect(options, options.port2 && i % 2 ? options.port2 : options.port);
    conns[i].id = i;
    conns[i].allocate(in_bytes, out_bytes);
    loop.add(conns[i], EPOLLOUT);
  }
  std::size_t connected = 0;
  const auto deadline = Clock::now() + std::chrono::duration<double>(options.timeout);
  while (connected < count && Clock::now() < deadline) {
    loop.wait(50, [&](Conn& conn, std::uint32_t events) {
      if (conn.connected || !(events & EPOLLOUT)) return;
      int error = 0;
      socklen_t length = sizeof error;
      ::getsockopt(conn.fd, SOL_SOCKET, SO_ERROR, &error, &length);
      if (error != 0) die(std::string("connect(): ") + std::strerror(error));
      conn.connected = true;
      ++connected;
      loop.modify(conn, EPOLLIN);
    });
  }
  if (connected < count) die("only " + std::to_string(connected) + " of " + std::to_string(count) + " connected");
  return conns;
}

void close_all(std::vector<Conn>& conns) {
  for (Conn& conn : conns)
    if (conn.fd >= 0) ::close(std::exchange(conn.fd, -1));
}

// --- echo ----------------------------------------------------------------------------------

void send_echo_request(Conn& conn, Loop& loop, const Options& options) {
  conn.out_length = bench::make_request('e', conn.id, conn.seq, options.size, conn.out.get(), conn.out_capacity);
  conn.out_sent = 0;
  conn.sent_at = now_ns();
  if (!write_pending(conn)) loop.modify(conn, EPOLLIN | EPOLLOUT);
}

void run_echo(const Options& options) {
  Loop loop;
  std::vector<Conn> conns = connect_all(options, loop, options.connections, std::max<std::size_t>(65536, options.size * 4),
                                        options.size + 64);
  bench::Histogram latency;
  const double cpu_before = cpu_seconds(options.server_pid);
  const double own_before = own_cpu_seconds();
  const std::uint64_t start = now_ns();
  const std::uint64_t stop = start + static_cast<std::uint64_t>(options.duration * 1e9);
  for (Conn& conn : conns) send_echo_request(conn, loop, options);
  std::uint64_t completed = 0;
  std::size_t lost = 0;
  while (now_ns() < stop) {
    loop.wait(10, [&](Conn& conn, std::uint32_t events) {
      if (conn.fd < 0) return;
      if ((events & EPOLLOUT) && write_pending(conn)) loop.modify(conn, EPOLLIN);
      const bool open = read_lines(conn, [&](Conn& c, std::string_view line) {
        if (!bench::is_echo_of(line, c.id, c.seq)) return;  // a banner or another line
        latency.record(now_ns() - c.sent_at);
        ++c.completed;
        ++completed;
        ++c.seq;
        send_echo_request(c, loop, options);
      });
      if (!open) {
        loop.remove(conn);
        ::close(std::exchange(conn.fd, -1));
        ++lost;
      }
    });
  }
  const double elapsed = static_cast<double>(now_ns() - start) / 1e9;
  const double cpu = cpu_seconds(options.server_pid) - cpu_before;
  const auto starved = std::count_if(conns.begin(), conns.end(), [](const Conn& c) { return c.completed == 0; });
  Result result("echo");
  result.add("connections", std::to_string(options.connections)).add("size", std::to_string(options.size))
      .add("seconds", elapsed, 2).add("requests", std::to_string(completed))
      .add("rps", static_cast<double>(completed) / elapsed, 0);
  add_latency(result, latency, "");
  result.add("starved", std::to_string(starved)).add("closed", std::to_string(lost))
      .add("client_cpu_percent", 100.0 * (own_cpu_seconds() - own_before) / elapsed, 0);
  if (options.server_pid > 0 && completed > 0)
    result.add("server_cpu_us_per_request", cpu * 1e6 / static_cast<double>(completed), 2);
  result.print(options.json);
  close_all(conns);
}

// --- chat ----------------------------------------------------------------------------------

// Rounds of messages: each of the first --senders clients sends one line per round; a round ends
// when every client got every other sender's line. A round that makes no progress for --timeout
// ends the run: under Single or PreFork a broadcast reaches nobody, and the delivered fraction
// says so. Adds the figures to `result`.
void run_rounds(const Options& options, Loop& loop, std::vector<Conn>& conns, Result& result) {
  const std::size_t n = conns.size();
  const std::size_t senders = options.senders;
  std::uint64_t round = 0;
  std::size_t clients_done = 0;
  std::uint64_t deliveries = 0;
  std::uint64_t round_deliveries = 0;
  auto expected = [&](const Conn& conn) { return senders - (conn.id < senders ? 1 : 0); };
  auto on_line = [&](Conn& conn, std::string_view line) {
    std::uint64_t message_round = 0, sender = 0;
    if (!bench::parse_delivery(line, message_round, sender) || message_round != round || sender == conn.id) return;
    ++deliveries;
    ++round_deliveries;
    if (++conn.got == expected(conn)) ++clients_done;
  };
  auto pump = [&](int timeout_ms) {
    loop.wait(timeout_ms, [&](Conn& conn, std::uint32_t events) {
      if (conn.fd < 0) return;
      if ((events & EPOLLOUT) && write_pending(conn)) loop.modify(conn, EPOLLIN);
      if (!read_lines(conn, on_line)) {
        loop.remove(conn);
        ::close(std::exchange(conn.fd, -1));
      }
    });
  };
  bench::Histogram round_latency;
  const double cpu_before = cpu_seconds(options.server_pid) + cpu_seconds(options.server_pid2);
  const double own_before = own_cpu_seconds();
  const std::uint64_t start = now_ns();
  const std::uint64_t stop = start + static_cast<std::uint64_t>(options.duration * 1e9);
  bool stalled = false;
  std::uint64_t last_round_fraction_numerator = 0;
  while (now_ns() < stop && !stalled) {
    for (Conn& conn : conns) conn.got = 0;
    clients_done = static_cast<std::size_t>(std::count_if(conns.begin(), conns.end(), [&](const Conn& c) { return expected(c) == 0; }));
    round_deliveries = 0;
    const std::uint64_t round_start = now_ns();
    for (std::size_t i = 0; i < senders; ++i) {
      Conn& conn = conns[i];
      if (conn.fd < 0) continue;
      conn.out_length = bench::make_request('c', round, conn.id, options.size, conn.out.get(), conn.out_capacity);
      conn.out_sent = 0;
      if (!write_pending(conn)) loop.modify(conn, EPOLLIN | EPOLLOUT);
    }
    std::uint64_t last_progress = now_ns(), seen = 0;
    while (clients_done < n) {
      pump(10);
      if (round_deliveries != seen) {
        seen = round_deliveries;
        last_progress = now_ns();
      } else if (now_ns() - last_progress > static_cast<std::uint64_t>(options.timeout * 1e9)) {
        stalled = true;
        break;
      }
    }
    if (!stalled) round_latency.record(now_ns() - round_start);
    last_round_fraction_numerator = round_deliveries;
    ++round;
  }
  const double elapsed = static_cast<double>(now_ns() - start) / 1e9;
  const double cpu = cpu_seconds(options.server_pid) + cpu_seconds(options.server_pid2) - cpu_before;
  const double per_round = static_cast<double>(senders) * static_cast<double>(n - 1);
  const std::uint64_t rounds_done = stalled ? round - 1 : round;
  result.add("clients", std::to_string(n)).add("senders", std::to_string(senders))
      .add("size", std::to_string(options.size)).add("seconds", elapsed, 2)
      .add("rounds", std::to_string(rounds_done)).add("deliveries", std::to_string(deliveries))
      .add("deliveries_per_s", static_cast<double>(deliveries) / elapsed, 0);
  add_latency(result, round_latency, "round_");
  result.add("delivered_fraction",
             stalled ? static_cast<double>(last_round_fraction_numerator) / per_round : 1.0, 3)
      .add("client_cpu_percent", 100.0 * (own_cpu_seconds() - own_before) / elapsed, 0);
  if (options.server_pid > 0 && rounds_done > 0) {
    result.add("server_cpu_us_per_message", cpu * 1e6 / static_cast<double>(rounds_done * senders), 1);
    result.add("server_cpu_ms_per_round", cpu * 1e3 / static_cast<double>(rounds_done), 2);
  }
  if (options.server_pid > 0 && deliveries > 0)
    result.add("server_cpu_us_per_delivery", cpu * 1e6 / static_cast<double>(deliveries), 2);
  if (stalled)
    result.add("note", "round " + std::to_string(round - 1) + " stalled: the broadcast does not reach the other "
                       "clients (one client per process?)");
}

// Every client talks each round (or the first --senders): a small room's steady state.
void run_chat(const Options& options) {
  Loop loop;
  std::vector<Conn> conns = connect_all(options, loop, options.connections, 64 * 1024, options.size + 64);
  // Let the welcomes and join announcements settle before measuring.
  const auto greet_deadline = Clock::now() + std::chrono::duration<double>(options.timeout);
  auto drain = [&](int timeout_ms) {
    loop.wait(timeout_ms, [&](Conn& conn, std::uint32_t) { read_lines(conn, [](Conn&, std::string_view) {}); });
  };
  while (Clock::now() < greet_deadline &&
         !std::all_of(conns.begin(), conns.end(), [](const Conn& c) { return c.greeted; }))
    drain(50);
  for (auto quiet = Clock::now() + std::chrono::milliseconds(200); Clock::now() < quiet;) drain(20);
  Result result("chat");
  run_rounds(options, loop, conns, result);
  result.print(options.json);
  close_all(conns);
}

// --- join storm ----------------------------------------------------------------------------

// The kernel's count of connections it dropped because a listener's accept queue was full
// (TcpExt ListenOverflows + ListenDrops, for the whole network namespace).
long listen_queue_drops() {
  std::ifstream in("/proc/net/netstat");
  std::string names, values;
  while (std::getline(in, names) && std::getline(in, values)) {
    if (!names.starts_with("TcpExt:")) continue;
    std::istringstream n(names), v(values);
    long total = 0;
    for (std::string name, value; n >> name && v >> value;)
      if (name == "ListenOverflows" || name == "ListenDrops") total += std::stol(value);
    return total;
  }
  return -1;
}

// A room filling up: every client is welcomed, and every client hears of everyone who joined
// after it ("Please welcome ..."), N(N-1)/2 announcements in all.
struct Room {
  std::size_t welcomed = 0;
  std::uint64_t announcements = 0;
  std::size_t closed = 0;
  bench::Histogram welcome_latency;  // from connect() to the welcome, per client
  double all_welcomed_s = 0;
  double quiet_s = 0;
  bool complete = false;
};

// Opens options.connections chat clients, at most `max_in_flight` of them not yet welcomed, and
// waits until the room is complete (or --timeout passes).
Room fill_room(const Options& options, Loop& loop, std::vector<Conn>& conns, std::size_t max_in_flight) {
  Room room;
  const std::size_t n = conns.size();
  const std::uint64_t expected = static_cast<std::uint64_t>(n) * (n - 1) / 2;
  std::size_t opened = 0;
  const std::uint64_t start = now_ns();
  const std::uint64_t deadline = start + static_cast<std::uint64_t>(options.timeout * 1e9);
  auto on_line = [&](Conn& conn, std::string_view line) {
    if (line.starts_with("Please welcome ")) ++room.announcements;
    else if (line.starts_with("Welcome") && !conn.connected) {
      conn.connected = true;  // here: welcomed
      ++room.welcomed;
      room.welcome_latency.record(now_ns() - conn.sent_at);
      if (room.welcomed == n) room.all_welcomed_s = static_cast<double>(now_ns() - start) / 1e9;
    }
  };
  while (now_ns() < deadline && (room.welcomed < n || room.announcements < expected)) {
    for (; opened < n && opened - room.welcomed < max_in_flight; ++opened) {
      Conn& conn = conns[opened];
      conn.fd = start_connect(options, options.port);
      conn.id = opened;
      conn.sent_at = now_ns();
      conn.allocate(4096, options.size + 64);
      loop.add(conn, EPOLLIN);
    }
    loop.wait(20, [&](Conn& conn, std::uint32_t) {
      if (conn.fd >= 0 && !read_lines(conn, on_line)) {
        loop.remove(conn);
        ::close(std::exchange(conn.fd, -1));
        ++room.closed;
      }
    });
  }
  room.quiet_s = static_cast<double>(now_ns() - start) / 1e9;
  room.complete = room.welcomed == n && room.announcements == expected;
  conns.resize(opened);
  return room;
}

void add_room(Result& result, const Room& room, std::size_t n) {
  result.add("clients", std::to_string(n)).add("welcomed", std::to_string(room.welcomed))
      .add("announcements", std::to_string(room.announcements))
      .add("complete", room.complete ? "yes" : "no").add("closed", std::to_string(room.closed))
      .add("all_welcomed_s", room.all_welcomed_s, 3).add("quiet_s", room.quiet_s, 3)
      .add("welcome_p50_ms", static_cast<double>(room.welcome_latency.percentile(0.50)) / 1e6, 1)
      .add("welcome_p99_ms", static_cast<double>(room.welcome_latency.percentile(0.99)) / 1e6, 1)
      .add("welcome_max_ms", static_cast<double>(room.welcome_latency.max()) / 1e6, 1);
}

// Join storm: --connections chat clients connect as fast as connect() returns, all at once.
// Reports seconds until all were welcomed and until every announcement arrived, the server's CPU
// seconds for the whole storm, and connections the accept queue dropped meanwhile (a dropped one
// is retried by the kernel after a second or more: its client waits that long for its welcome).
void run_join(const Options& options) {
  Loop loop;
  std::vector<Conn> conns(options.connections);
  const long drops_before = listen_queue_drops();
  const double cpu_before = cpu_seconds(options.server_pid);
  const double own_before = own_cpu_seconds();
  const Room room = fill_room(options, loop, conns, options.connections);
  const double cpu = cpu_seconds(options.server_pid) - cpu_before;
  Result result("join");
  add_room(result, room, options.connections);
  result.add("accept_queue_drops", std::to_string(listen_queue_drops() - drops_before))
      .add("client_cpu_s", own_cpu_seconds() - own_before, 2);
  if (options.server_pid > 0) result.add("server_cpu_s", cpu, 2);
  result.print(options.json);
  close_all(conns);
}

// A big room's broadcast: --connections clients join (at most 500 handshakes at a time), then
// rounds of --senders messages each.
void run_broadcast(const Options& options) {
  Loop loop;
  std::vector<Conn> conns(options.connections);
  const Room room = fill_room(options, loop, conns, 500);
  if (!room.complete) die("the room did not fill: " + std::to_string(room.welcomed) + " welcomed, " +
                          std::to_string(room.announcements) + " announcements");
  for (Conn& conn : conns) conn.got = 0;
  Result result("broadcast");
  result.add("join_s", room.quiet_s, 2);
  run_rounds(options, loop, conns, result);
  result.print(options.json);
  close_all(conns);
}

// --- connect -------------------------------------------------------------------------------

// The PROXY header a balancer would send for client number `n` (198.18.0.0/15, the benchmarking
// network, one address per client) connecting to port 80: v1's text line or v2's 28 bytes.
std::string proxy_header(const std::string& version, std::uint64_t n) {
  const std::uint32_t client = (198u << 24) | (18u << 16) | static_cast<std::uint32_t>(n % 65536);
  const std::uint16_t client_port = static_cast<std::uint16_t>(1024 + n % 60000);
  if (version == "v1")
    return "PROXY TCP4 198.18." + std::to_string((client >> 8) & 255) + "." + std::to_string(client & 255) +
           " 127.0.0.1 " + std::to_string(client_port) + " 80\r\n";
  std::string header("\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c", 16);
  const auto put32 = [&](std::uint32_t value) {
    for (int shift = 24; shift >= 0; shift -= 8) header.push_back(static_cast<char>((value >> shift) & 255));
  };
  put32(client);
  put32(0x7f000001);
  header.push_back(static_cast<char>(client_port >> 8));
  header.push_back(static_cast<char>(client_port & 255));
  header.push_back(0);
  header.push_back(80);
  return header;
}

// Each of --connections slots loops: connect, read the banner, one echo, close (with --proxy, a
// PROXY header is sent first, on its own, as a balancer writes it).
void run_connect(const Options& options) {
  Loop loop;
  enum class Step { connecting, banner, echo };
  std::vector<Conn> slots(options.connections);
  std::vector<Step> steps(options.connections);
  bench::Histogram latency;
  std::uint64_t cycles = 0;
  auto open_slot = [&](std::size_t i) {
    Conn& conn = slots[i];
    conn.fd = start_connect(options);
    conn.in_length = 0;
    conn.sent_at = now_ns();
    steps[i] = Step::connecting;
    loop.add(conn, EPOLLOUT);
  };
  for (std::size_t i = 0; i < slots.size(); ++i) {
    slots[i].id = i;
    slots[i].allocate(4096, options.size + 64);
    open_slot(i);
  }
  const std::uint64_t start = now_ns();
  const std::uint64_t stop = start + static_cast<std::uint64_t>(options.duration * 1e9);
  while (now_ns() < stop) {
    loop.wait(10, [&](Conn& conn, std::uint32_t events) {
      const std::size_t i = conn.id;
      if (steps[i] == Step::connecting) {
        if (!(events & EPOLLOUT)) return;
        if (!options.proxy.empty()) {
          const std::string header = proxy_header(options.proxy, cycles * options.connections + i);
          if (::send(conn.fd, header.data(), header.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(header.size()))
            die(std::string("send() of the PROXY header: ") + std::strerror(errno));
        }
        loop.modify(conn, EPOLLIN);
        steps[i] = Step::banner;
        return;
      }
      bool finished = false;
      const bool open = read_lines(conn, [&](Conn& c, std::string_view line) {
        if (steps[i] == Step::banner) {
          steps[i] = Step::echo;
          c.out_length = bench::make_request('e', c.id, c.seq, options.size, c.out.get(), c.out_capacity);
          c.out_sent = 0;
          write_pending(c);
        } else if (bench::is_echo_of(line, c.id, c.seq)) {
          finished = true;
        }
      });
      if (finished) {
        latency.record(now_ns() - conn.sent_at);
        ++cycles;
        ++conn.seq;
      }
      if (finished || !open) {
        loop.remove(conn);
        ::close(conn.fd);
        open_slot(i);
      }
    });
  }
  const double elapsed = static_cast<double>(now_ns() - start) / 1e9;
  Result result("connect");
  result.add("concurrency", std::to_string(options.connections)).add("seconds", elapsed, 2)
      .add("connections", std::to_string(cycles)).add("connections_per_s", static_cast<double>(cycles) / elapsed, 0);
  add_latency(result, latency, "");
  result.print(options.json);
  close_all(slots);
}

// --- idle ----------------------------------------------------------------------------------

// Opens --connections connections (at most 500 handshakes in flight), waits for every banner, and
// reports the time that took, the server's RSS growth per connection, and whether it still answers.
void run_idle(const Options& options) {
  if (options.server_pid <= 0) die("idle needs --server-pid");
  Loop loop;
  const long rss_before = rss_kib(options.server_pid);
  std::vector<Conn> conns(options.connections);
  std::size_t opened = 0, greeted = 0, in_flight = 0;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(options.timeout);
  while (greeted < conns.size() && Clock::now() < deadline) {
    for (; opened < conns.size() && in_flight < 500; ++opened, ++in_flight) {
      Conn& conn = conns[opened];
      conn.fd = start_connect(options);
      conn.id = opened;
      conn.allocate(512, 1);
      loop.add(conn, EPOLLIN);
    }
    loop.wait(20, [&](Conn& conn, std::uint32_t) {
      if (conn.greeted) return;
      read_lines(conn, [](Conn&, std::string_view) {});
      if (conn.greeted) {
        ++greeted;
        --in_flight;
      }
    });
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const long rss_after = rss_kib(options.server_pid);

  Options probe = options;  // does the server still answer?
  probe.connections = 1;
  Loop probe_loop;
  std::vector<Conn> extra = connect_all(probe, probe_loop, 1, 4096, 256);
  bool answered = false;
  send_echo_request(extra[0], probe_loop, probe);
  for (auto until = Clock::now() + std::chrono::seconds(5); !answered && Clock::now() < until;)
    probe_loop.wait(50, [&](Conn& conn, std::uint32_t) {
      read_lines(conn, [&](Conn& c, std::string_view line) { answered |= bench::is_echo_of(line, c.id, c.seq); });
    });
  Result result("idle");
  result.add("connections", std::to_string(greeted)).add("accept_seconds", seconds, 2)
      .add("rss_before_kib", std::to_string(rss_before)).add("rss_after_kib", std::to_string(rss_after))
      .add("bytes_per_connection",
           greeted ? static_cast<double>(rss_after - rss_before) * 1024.0 / static_cast<double>(greeted) : 0.0, 0)
      .add("answers", answered ? "yes" : "no");
  result.print(options.json);
  close_all(extra);
  close_all(conns);
}

// --- pids ----------------------------------------------------------------------------------

long pid_in(std::string_view line) {
  const std::size_t at = line.find("pid ");
  if (at == std::string_view::npos) return -1;
  return std::strtol(std::string(line.substr(at + 4)).c_str(), nullptr, 10);
}

// Connects every client at once, notes who is answered at once; then lets the answered ones leave
// one by one and notes who is answered after whom.
void run_pids(const Options& options) {
  Loop loop;
  std::vector<Conn> conns = connect_all(options, loop, options.connections, 4096, 64);
  std::vector<long> pid(conns.size(), -1);
  std::vector<std::string> when(conns.size());
  std::size_t answered = 0;
  auto collect = [&](double seconds, const std::string& label) {
    const auto until = Clock::now() + std::chrono::duration<double>(seconds);
    std::size_t before = answered;
    while (Clock::now() < until && answered < conns.size()) {
      loop.wait(20, [&](Conn& conn, std::uint32_t) {
        const bool open = read_lines(conn, [&](Conn& c, std::string_view line) {
          if (pid[c.id] < 0 && pid_in(line) > 0) {
            pid[c.id] = pid_in(line);
            when[c.id] = label;
            ++answered;
          }
        });
        if (!open) loop.remove(conn);
      });
      if (answered > before && label != "at once") break;  // one more answered: next round
    }
  };
  collect(options.timeout, "at once");
  const std::size_t concurrent = answered;
  std::set<std::size_t> left;
  while (answered < conns.size()) {
    auto leaver = std::find_if(conns.begin(), conns.end(), [&](const Conn& c) { return pid[c.id] > 0 && !left.count(c.id); });
    if (leaver == conns.end()) break;
    const char bye[] = "bye\r\n";
    (void)::send(leaver->fd, bye, sizeof bye - 1, MSG_NOSIGNAL);
    left.insert(leaver->id);
    collect(options.timeout, "after client " + std::to_string(leaver->id + 1) + " left");
  }
  std::printf("client  server pid  answered\n");
  std::map<long, std::size_t> held;  // pid -> clients it answered
  for (std::size_t i = 0; i < conns.size(); ++i) {
    if (pid[i] > 0) ++held[pid[i]];
    if (options.connections <= 100)
      std::printf("%6zu  %10s  %s\n", i + 1, pid[i] > 0 ? std::to_string(pid[i]).c_str() : "-",
                  when[i].empty() ? "never" : when[i].c_str());
  }
  // The spread over the serving processes: the busiest's and the quietest's share of the clients.
  std::size_t most = 0, least = held.empty() ? 0 : conns.size();
  for (const auto& [serving, count] : held) {
    most = std::max(most, count);
    least = std::min(least, count);
  }
  auto percent = [&](std::size_t count) {
    return 100.0 * static_cast<double>(count) / static_cast<double>(std::max<std::size_t>(answered, 1));
  };
  Result result("pids");
  result.add("clients", std::to_string(conns.size())).add("distinct_pids", std::to_string(held.size()))
      .add("answered_at_once", std::to_string(concurrent))
      .add("concurrent", concurrent == conns.size() ? "yes" : "no")
      .add("busiest_pid_percent", percent(most))
      .add("quietest_pid_percent", percent(least));
  result.print(options.json);
  close_all(conns);
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse_options(argc, argv);
  raise_descriptor_limit();
  const std::map<std::string, std::function<void(const Options&)>> modes{
      {"echo", run_echo},       {"chat", run_chat}, {"join", run_join}, {"broadcast", run_broadcast},
      {"connect", run_connect}, {"idle", run_idle}, {"pids", run_pids}};
  auto mode = modes.find(options.mode);
  if (mode == modes.end()) die("unknown mode '" + options.mode + "' (echo, chat, join, broadcast, connect, idle, pids)");
  mode->second(options);
  return 0;
}
