#include "haproxy.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <catch2/catch.hpp>

namespace harness {

namespace {

constexpr const char* haproxy_binary = "/usr/sbin/haproxy";
constexpr int inherited_fd = 3;  // the frontend's socket in HAProxy: `bind fd@3`

// A listening TCP socket on host:0; returns it and its port.
int listen_on_free_port(const std::string& host, int& port) {
  const bool v6 = host.find(':') != std::string::npos;
  const int fd = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_storage address{};
  socklen_t length = 0;
  if (v6) {
    auto& a = reinterpret_cast<sockaddr_in6&>(address);
    a.sin6_family = AF_INET6;
    ::inet_pton(AF_INET6, host.c_str(), &a.sin6_addr);
    length = sizeof a;
  } else {
    auto& a = reinterpret_cast<sockaddr_in&>(address);
    a.sin_family = AF_INET;
    ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
    length = sizeof a;
  }
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), length) != 0 || ::listen(fd, 128) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    const int error = errno;
    ::close(fd);
    throw std::runtime_error("listen on " + host + ":0: " + std::strerror(error));
  }
  port = ntohs(v6 ? reinterpret_cast<sockaddr_in6&>(address).sin6_port : reinterpret_cast<sockaddr_in&>(address).sin_port);
  return fd;
}

// Runs HAProxy with `listener` as its fd 3 and its output in `log`; returns its pid.
pid_t spawn_haproxy(const std::string& config, const std::string& log, int listener) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  // The child: only async-signal-safe calls until exec.
  const int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  const int in = ::open("/dev/null", O_RDONLY);
  if (out < 0 || in < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0 ||
      ::dup2(listener, inherited_fd) < 0)  // dup2 clears close-on-exec on the copy ...
    ::_exit(127);
  if (::fcntl(inherited_fd, F_SETFD, 0) < 0) ::_exit(127);  // ... but not when the socket was fd 3 already

  ::close_range(inherited_fd + 1, ~0u, 0);  // nothing else of the test's leaks into HAProxy
  const char* argv[] = {haproxy_binary, "-db", "-f", config.c_str(), nullptr};
  ::execv(haproxy_binary, const_cast<char* const*>(argv));
  ::_exit(127);
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

Haproxy::Haproxy(HaproxySetup setup, Seconds timeout) {
  const int listener = listen_on_free_port(setup.frontend_host, port_);
  config_ = write_config(setup);
  const std::string config_path = dir_.write("haproxy.cfg", config_).string();
  pid_ = spawn_haproxy(config_path, (dir_.path() / "haproxy.log").string(), listener);
  ::close(listener);  // HAProxy holds it now; this process must not keep the port open
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  // Up once its stats socket answers (it is bound with the listeners); gone if it exits first.
  const bool up = eventually([&] {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return true;
    }
    return answers_stats_socket();
  }, timeout);
  if (!up || status_ >= 0) {
    if (status_ < 0) stop();
    throw std::runtime_error("haproxy did not start (status " + std::to_string(status_) + "); its log:\n" + log() +
                             "\nits config:\n" + config_);
  }
}

Haproxy::~Haproxy() {
  stop();
  const std::string text = log();
  if (text.find("[ALERT]") != std::string::npos) {
    INFO("haproxy log:\n" << text);
    FAIL_CHECK("haproxy logged an [ALERT]");
  }
  if (alive(pid_)) FAIL_CHECK("haproxy " << pid_ << " still runs");
  if (!listening_sockets(port_).empty()) FAIL_CHECK("port " << port_ << " still listens after haproxy stopped");
}

std::string Haproxy::write_config(const HaproxySetup& setup) const {
  std::ostringstream config;
  config << "global\n"
         << "    maxconn 1000\n"
         << "    stats socket " << (dir_.path() / "stats.sock").string() << " mode 600 level user\n"
         << "defaults\n"
         << "    mode tcp\n"
         << "    timeout connect 5s\n"
         << "    timeout client 30s\n"
         << "    timeout server 30s\n"
         << "frontend front\n"
         << "    bind fd@" << inherited_fd << (setup.bind_options.empty() ? "" : " " + setup.bind_options) << "\n"
         << "    default_backend back\n"
         << "backend back\n"
         << "    server s1 " << setup.backend << " " << setup.send_proxy;
  if (!setup.proxy_v2_options.empty()) {
    config << " proxy-v2-options ";
    for (std::size_t i = 0; i < setup.proxy_v2_options.size(); ++i) config << (i ? "," : "") << setup.proxy_v2_options[i];
  }
  if (!setup.source.empty()) config << " source " << setup.source;
  if (!setup.server_options.empty()) config << " " << setup.server_options;
  config << "\n";
  return config.str();
}

bool Haproxy::answers_stats_socket() const {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  const std::string path = (dir_.path() / "stats.sock").string();
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  bool answered = false;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    const std::string command = "show info\n";
    char reply[64];
    answered = ::write(fd, command.data(), command.size()) == static_cast<ssize_t>(command.size()) &&
               ::read(fd, reply, sizeof reply) > 0;
  }
  ::close(fd);
  return answered;
}

std::string Haproxy::log() const { return read_all((dir_.path() / "haproxy.log").string()); }

int Haproxy::stop(Seconds timeout) {
  if (status_ >= 0 || pid_ <= 0) return status_;
  ::kill(pid_, SIGTERM);
  const auto reaped = [&] {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) != pid_) return false;
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return true;
  };
  if (!eventually(reaped, timeout)) {
    ::kill(pid_, SIGKILL);
    eventually(reaped, 5s);
  }
  return status_;
}

}  // namespace harness
