#include "harness.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <catch2/catch.hpp>

#include <boost/process/args.hpp>
#include <boost/process/env.hpp>
#include <boost/process/environment.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/io.hpp>

namespace bp = boost::process;
namespace fs = std::filesystem;

namespace harness {

namespace {

using Clock = std::chrono::steady_clock;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

int decode_status(int native) {
  if (WIFEXITED(native)) return WEXITSTATUS(native);
  if (WIFSIGNALED(native)) return 128 + WTERMSIG(native);
  return native;
}

// Polls the child until it exits or the deadline passes.
std::optional<int> wait_child(bp::child& child, Seconds timeout) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  std::error_code error;
  while (child.running(error)) {
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(5ms);
  }
  return decode_status(child.native_exit_code());
}

int poll_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

// Tests open a thousand clients and more: lift the soft descriptor limit to the hard one.
const bool descriptor_limit_raised = [] {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  limit.rlim_cur = limit.rlim_max;
  const rlimit no_core{0, 0};  // servers that crash on purpose leave no core files
  return ::setrlimit(RLIMIT_NOFILE, &limit) == 0 && ::setrlimit(RLIMIT_CORE, &no_core) == 0;
}();

}  // namespace

// --- TempDir -------------------------------------------------------------------------------

TempDir::TempDir() {
  std::string pattern = (fs::temp_directory_path() / "netserver-test-XXXXXX").string();
  if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  fs::remove_all(path_, ignored);
}

fs::path TempDir::write(const std::string& name, const std::string& text) const {
  const fs::path file = path_ / name;
  std::ofstream(file, std::ios::binary) << text;
  return file;
}

std::string binary(const std::string& name) {
  for (const char* folder : {"examples", "bench", "tests"}) {
    const fs::path candidate = fs::path(NETSERVER_BINARY_DIR) / folder / name;
    if (fs::exists(candidate)) return candidate.string();
  }
  throw std::runtime_error("binary not built: " + name);
}

Outcome run(const std::string& program, const std::vector<std::string>& args, Seconds timeout) {
  TempDir dir;
  const fs::path output = dir.path() / "output";
  bp::child child(bp::exe = program, bp::args = args, (bp::std_out & bp::std_err) > output, bp::std_in < bp::null);
  std::optional<int> status = wait_child(child, timeout);
  if (!status) {
    ::kill(child.id(), SIGKILL);
    status = wait_child(child, 5s);
  }
  return Outcome{status.value_or(-1), read_file(output)};
}

// --- ServerProcess -------------------------------------------------------------------------

ServerProcess::ServerProcess(const std::string& program, const std::string& yaml, Launch launch)
    : log_path_(dir_.path() / "server.log") {
  std::vector<std::string> args = launch.args;
  args.insert(args.begin(), {"--config", dir_.write("server.yaml", yaml).string()});
  std::string exe = program;
  if (!launch.wrapper.empty()) {
    args.insert(args.begin(), program);
    args.insert(args.begin(), launch.wrapper.begin() + 1, launch.wrapper.end());
    exe = launch.wrapper.front();
  }
  bp::environment env = boost::this_process::environment();
  for (const auto& [name, value] : launch.env) env[name] = value;
  child_ = bp::child(bp::exe = exe, bp::args = args, env, (bp::std_out & bp::std_err) > log_path_, bp::std_in < bp::null);
  if (!launch.wait_until_listening) return;
  if (!wait_for_log("listening on ", 10s)) throw std::runtime_error("server did not start; its log:\n" + log());
}

bool ServerProcess::scan_port() const {
  static const std::regex plain(R"(listening on (?:127\.0\.0\.1|\[::1\]|\[::\]|0\.0\.0\.0):(\d+))");
  std::smatch match;
  const std::string text = log();
  if (port_ == 0 && std::regex_search(text, match, plain)) port_ = std::stoi(match[1]);
  return port_ != 0;
}

int ServerProcess::port() const {
  if (port_ == 0) eventually([&] { return scan_port(); }, 5s);
  return port_;
}

// Stops the server, then fails the running test on descriptors growing per connection, processes
// or listening ports left behind, sanitizer reports or unexpected [error] lines.
ServerProcess::~ServerProcess() {
  if (!status_) check_descriptors_flat();
  if (!status_) stop(10s);
  check_nothing_left();
  const std::string text = log();
  const bool sanitizer_report = text.find("ERROR: AddressSanitizer") != std::string::npos ||
                                text.find("ERROR: LeakSanitizer") != std::string::npos ||
                                text.find("runtime error:") != std::string::npos;
  if (sanitizer_report || (!errors_expected_ && !error_lines().empty())) {
    INFO("server log:\n" << text);
    FAIL_CHECK("the server logged errors or a sanitizer report");
  }
}

pid_t ServerProcess::pid() const { return static_cast<pid_t>(child_.id()); }

int ServerProcess::port_of(const std::string& host) const {
  const std::string marker = "listening on " + host + ":";
  int port = -1;
  eventually([&] {
    const std::string text = log();
    const std::size_t at = text.find(marker);
    if (at != std::string::npos) port = std::stoi(text.substr(at + marker.size()));
    return port != -1;
  }, 5s);
  return port;
}

std::string ServerProcess::log() const { return read_file(log_path_); }

bool ServerProcess::wait_for_log(const std::string& text, Seconds timeout) const {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  while (log().find(text) == std::string::npos) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

std::size_t ServerProcess::count_in_log(const std::string& text) const {
  const std::string all = log();
  std::size_t count = 0;
  for (std::size_t at = all.find(text); at != std::string::npos; at = all.find(text, at + text.size())) ++count;
  return count;
}

void ServerProcess::signal(int signal_number) const { ::kill(pid(), signal_number); }

std::optional<int> ServerProcess::wait_exit(Seconds timeout) {
  if (!status_) status_ = wait_child(child_, timeout);
  return status_;
}

int ServerProcess::stop(Seconds timeout) {
  if (status_) return *status_;
  note_descendants();
  signal(SIGTERM);
  if (wait_exit(timeout)) return *status_;
  signal(SIGKILL);
  return wait_exit(5s).value_or(-1);
}

namespace {

// Open descriptors of the server and of each of its processes, less one per child process (a
// PreFork parent's channel to each child: a pool that grew is no leak), once two looks 50 ms
// apart agree.
std::map<pid_t, std::size_t> settled_descriptors(pid_t server) {
  auto own = [](pid_t pid) {
    const std::size_t open = descriptors_of(pid), children = children_of(pid).size();
    return open > children ? open - children : 0;
  };
  auto look = [&] {
    std::map<pid_t, std::size_t> counts{{server, own(server)}};
    for (pid_t pid : descendants_of(server)) counts[pid] = own(pid);
    return counts;
  };
  std::map<pid_t, std::size_t> last = look();
  for (int i = 0; i < 40; ++i) {
    std::this_thread::sleep_for(50ms);
    std::map<pid_t, std::size_t> now = look();
    if (now == last) break;
    last = std::move(now);
  }
  return last;
}

}  // namespace

// 20 clients connect and leave; afterwards no process of the server may hold more than three
// descriptors more than before: a one-time resource opened with the first session (a PreFork
// child's lazy bus connections: subscriber, publisher and, on a redis-sentinel:// bus, the
// Sentinel watched for failovers) is no leak, one per connection would show. A refused client's
// socket kept by a PreFork child failed exactly this.
void ServerProcess::check_descriptors_flat() {
  if (!scan_port() || log().find("(restarted)") != std::string::npos) return;  // an exec changes the layout
  const std::map<pid_t, std::size_t> before = settled_descriptors(pid());
  for (int i = 0; i < 20; ++i) {
    try {
      Client client(port_);
    } catch (const std::exception&) {
      return;  // not accepting (stopping, or only a unix socket left): nothing to measure
    }
  }
  std::string grown;
  const bool flat = eventually([&] {
    grown.clear();
    for (const auto& [process, count] : settled_descriptors(pid())) {
      const auto it = before.find(process);
      if (it != before.end() && count > it->second + 3)
        grown += "pid " + std::to_string(process) + ": " + std::to_string(it->second) + " -> " + std::to_string(count) + "; ";
    }
    return grown.empty();
  }, 3s);
  if (!flat) FAIL_CHECK("descriptors grew after 20 connections: " << grown);
}

void ServerProcess::note_descendants() {
  for (pid_t process : descendants_of(pid()))
    if (std::find(descendants_.begin(), descendants_.end(), process) == descendants_.end()) descendants_.push_back(process);
}

// After the server exited: none of its processes still runs, none of its TCP ports still listens.
// Under AddressSanitizer a process's exit includes LeakSanitizer's scan of its memory, seconds on
// a loaded machine: its processes get longer to be gone.
void ServerProcess::check_nothing_left() {
#ifdef __SANITIZE_ADDRESS__
  constexpr Seconds exit_time = 20s;
#else
  constexpr Seconds exit_time = 5s;
#endif
  std::vector<pid_t> left;
  eventually([&] {
    left.clear();
    for (pid_t process : descendants_)
      if (alive(process)) left.push_back(process);
    return left.empty();
  }, exit_time);
  for (pid_t process : left) {
    FAIL_CHECK("server process " << process << " was left behind");
    ::kill(process, SIGKILL);
  }
  std::vector<int> ports;
  const std::string text = log();
  const std::regex listening(R"(listening on (?:[0-9.]+|\[[0-9a-f:]+\]):(\d+))");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), listening); it != std::sregex_iterator(); ++it)
    ports.push_back(std::stoi((*it)[1]));
  for (int port : ports)
    if (port > 0 && !eventually([&] { return listening_sockets(port).empty(); }, 2s))
      FAIL_CHECK("port " << port << " still listening after the server exited");
}

std::vector<std::string> ServerProcess::error_lines() const {
  std::vector<std::string> lines;
  std::istringstream in(log());
  for (std::string line; std::getline(in, line);)
    if (line.find("] [error] [") != std::string::npos) lines.push_back(line);
  return lines;
}

// --- Client --------------------------------------------------------------------------------

Client::Client(int port, const std::string& host, const std::string& source) {
  const bool v6 = host.find(':') != std::string::npos;
  const int family = v6 ? AF_INET6 : AF_INET;
  auto address_of = [&](const std::string& text, int at_port, sockaddr_storage& out) -> socklen_t {
    if (v6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&out);
      a->sin6_family = AF_INET6;
      a->sin6_port = htons(static_cast<uint16_t>(at_port));
      ::inet_pton(AF_INET6, text.c_str(), &a->sin6_addr);
      return sizeof *a;
    }
    auto* a = reinterpret_cast<sockaddr_in*>(&out);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(at_port));
    ::inet_pton(AF_INET, text.c_str(), &a->sin_addr);
    return sizeof *a;
  };
  fd_ = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_storage from{}, to{};
  if (!source.empty()) {
    const socklen_t length = address_of(source, 0, from);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&from), length) != 0)
      throw std::runtime_error("bind to " + source + ": " + std::strerror(errno));
  }
  const socklen_t length = address_of(host, port, to);
  if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&to), length) != 0)
    throw std::runtime_error("connect to " + host + ":" + std::to_string(port) + ": " + std::strerror(errno));
}

Client Client::unix_socket(const std::string& path) {
  Client client;
  client.fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  if (::connect(client.fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    throw std::runtime_error("connect to unix:" + path + ": " + std::strerror(errno));
  return client;
}

Client::~Client() { close(); }

Client::Client(Client&& other) noexcept : fd_(std::exchange(other.fd_, -1)), buffer_(std::move(other.buffer_)) {}

Client& Client::operator=(Client&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    buffer_ = std::move(other.buffer_);
  }
  return *this;
}

void Client::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Client::reset() {
  linger option{1, 0};
  ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &option, sizeof option);
  close();
}

int Client::local_port() const {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length);
  if (address.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&address)->sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in*>(&address)->sin_port);
}

bool Client::send(const std::string& bytes) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<std::size_t>(n);
  }
  return true;
}

Client::Fill Client::fill(Clock::time_point deadline) {
  pollfd p{fd_, POLLIN, 0};
  const int ready = ::poll(&p, 1, poll_ms(deadline));
  if (ready == 0) return Fill::timeout;
  char chunk[65536];
  const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
  if (n <= 0) return Fill::eof;
  buffer_.append(chunk, static_cast<std::size_t>(n));
  return Fill::data;
}

std::optional<std::string> Client::read_line(Seconds timeout) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  for (;;) {
    if (const std::size_t newline = buffer_.find('\n'); newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    if (fill(deadline) != Fill::data) return std::nullopt;
  }
}

std::string Client::read_all(Seconds timeout) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  while (fill(deadline) == Fill::data) {
  }
  return std::exchange(buffer_, {});
}

bool Client::closed_by_peer(Seconds timeout) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  for (;;) {
    switch (fill(deadline)) {
      case Fill::eof: return true;
      case Fill::timeout: return false;
      case Fill::data: buffer_.clear(); break;
    }
  }
}

bool Client::silent_for(Seconds quiet) {
  if (!buffer_.empty()) return false;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(quiet);
  return fill(deadline) == Fill::timeout;
}

DatagramSink::DatagramSink(const std::string& path) : path_(path), fd_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0)
    throw std::runtime_error("bind " + path + ": " + std::strerror(errno));
}

DatagramSink::~DatagramSink() {
  ::close(fd_);
  ::unlink(path_.c_str());
}

std::string DatagramSink::until(const std::string& text, Seconds timeout) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  while (received_.find(text) == std::string::npos && Clock::now() < deadline) received(0.05s);
  return received_;
}

std::string DatagramSink::received(Seconds wait) {
  pollfd p{fd_, POLLIN, 0};
  while (::poll(&p, 1, static_cast<int>(wait.count() * 1000)) > 0) {
    char buffer[4096];
    const ssize_t n = ::recv(fd_, buffer, sizeof buffer, 0);
    if (n > 0) received_ += std::string(buffer, static_cast<std::size_t>(n)) + "\n";
    wait = Seconds(0);  // then take only what is already there
  }
  return received_;
}

namespace {
// Every process's parent and whether it is a zombie.
struct ProcessEntry {
  pid_t pid;
  pid_t ppid;
  bool zombie;
};
std::vector<ProcessEntry> process_table() {
  std::vector<ProcessEntry> table;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator("/proc", error)) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = read_file(entry.path() / "stat");
    const std::size_t close = stat.rfind(')');
    if (close == std::string::npos || close + 4 >= stat.size()) continue;
    std::istringstream fields(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    fields >> state >> ppid;
    table.push_back({std::stoi(name), ppid, state == 'Z'});
  }
  return table;
}

// Children of `parent` whose state is (or is not) 'Z'.
std::vector<pid_t> children_in_state(pid_t parent, bool zombies) {
  std::vector<pid_t> children;
  for (const ProcessEntry& process : process_table())
    if (process.ppid == parent && process.zombie == zombies) children.push_back(process.pid);
  return children;
}
}  // namespace

std::vector<pid_t> children_of(pid_t parent) { return children_in_state(parent, false); }

std::vector<pid_t> descendants_of(pid_t parent) {
  const std::vector<ProcessEntry> table = process_table();
  std::vector<pid_t> all{parent};
  for (std::size_t i = 0; i < all.size(); ++i)
    for (const ProcessEntry& entry : table)
      if (entry.ppid == all[i] && !entry.zombie) all.push_back(entry.pid);
  all.erase(all.begin());
  return all;
}

bool alive(pid_t pid) {
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const std::size_t close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}
std::vector<pid_t> zombies_of(pid_t parent) { return children_in_state(parent, true); }

std::size_t descriptors_of(pid_t pid) {
  std::error_code error;
  std::size_t count = 0;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", error);
       !error && it != fs::directory_iterator(); it.increment(error))
    ++count;
  return count;
}

std::vector<unsigned long> listening_sockets(int port) {
  std::vector<unsigned long> inodes;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::istringstream in(read_file(table));
    std::string line;
    std::getline(in, line);  // the header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout;
      unsigned long inode = 0;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      const std::size_t colon = local.rfind(':');
      if (state != "0A" || colon == std::string::npos) continue;  // 0A: LISTEN
      if (std::stoi(local.substr(colon + 1), nullptr, 16) == port) inodes.push_back(inode);
    }
  }
  return inodes;
}

bool holds_listener(pid_t pid, int port) {
  const std::vector<unsigned long> inodes = listening_sockets(port);
  std::error_code error;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd", error);
       !error && it != fs::directory_iterator(); it.increment(error)) {
    std::error_code unreadable;
    const std::string target = fs::read_symlink(it->path(), unreadable).string();
    for (unsigned long inode : inodes)
      if (target == "socket:[" + std::to_string(inode) + "]") return true;
  }
  return false;
}

bool refuses_connections(int port) {
  try {
    Client client(port);
    return false;
  } catch (const std::exception&) {
    return true;
  }
}

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

bool eventually(const std::function<bool()>& condition, Seconds timeout) {
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(timeout);
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

long pid_in(const std::string& line) {
  std::smatch match;
  if (!std::regex_search(line, match, std::regex(R"(pid (\d+))"))) return -1;
  return std::stol(match[1]);
}

}  // namespace harness
