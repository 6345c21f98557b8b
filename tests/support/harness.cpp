#include "harness.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

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
  std::smatch match;
  const std::string text = log();
  if (std::regex_search(text, match, std::regex(R"(listening on (?:127\.0\.0\.1|\[::1\]|\[::\]|0\.0\.0\.0):(\d+))")))
    port_ = std::stoi(match[1]);
}

// Stops the server, then fails the running test on sanitizer reports or unexpected [error] lines.
ServerProcess::~ServerProcess() {
  if (!status_) stop(10s);
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
  const std::string text = log();
  const std::string marker = "listening on " + host + ":";
  const std::size_t at = text.find(marker);
  return at == std::string::npos ? -1 : std::stoi(text.substr(at + marker.size()));
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
  signal(SIGTERM);
  if (wait_exit(timeout)) return *status_;
  signal(SIGKILL);
  return wait_exit(5s).value_or(-1);
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
// Children of `parent` whose state is (or is not) 'Z'.
std::vector<pid_t> children_in_state(pid_t parent, bool zombies) {
  std::vector<pid_t> children;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = read_file(entry.path() / "stat");
    const std::size_t close = stat.rfind(')');
    if (close == std::string::npos || close + 4 >= stat.size()) continue;
    std::istringstream fields(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    fields >> state >> ppid;
    if (ppid == parent && (state == 'Z') == zombies) children.push_back(std::stoi(name));
  }
  return children;
}
}  // namespace

std::vector<pid_t> children_of(pid_t parent) { return children_in_state(parent, false); }
std::vector<pid_t> zombies_of(pid_t parent) { return children_in_state(parent, true); }

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
