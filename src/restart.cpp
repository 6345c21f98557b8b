#include "restart.hpp"

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <set>
#include <sstream>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "systemd.hpp"

namespace netserver {

namespace {

constexpr const char* listen_fds_variable = "NETSERVER_LISTEN_FDS";  // "FD ADDRESS" lines
constexpr const char* children_variable = "NETSERVER_CHILDREN";      // "PID,PID"
constexpr const char* detached_variable = "NETSERVER_DETACHED";      // "1"

std::string take_variable(const char* name) {
  const char* value = std::getenv(name);
  std::string text = value ? value : "";
  ::unsetenv(name);
  return text;
}

void close_inherited(Inheritance::Socket& socket) {
  log::notice("closing inherited listener {}: it is no longer configured", socket.address);
  ::close(socket.fd);
  const std::string_view plain = std::string_view(socket.address).substr(socket.address.starts_with("tls://") ? 6 : 0);
  if (plain.starts_with("unix:")) ::unlink(std::string(plain.substr(5)).c_str());
  socket.fd = -1;
}

}  // namespace

Inheritance Inheritance::take() {
  Inheritance inherited;
  const std::string passed_sockets = take_variable(listen_fds_variable);
  inherited.restarted = !passed_sockets.empty();  // a restart always hands over its listeners
  std::istringstream sockets(passed_sockets);
  for (std::string line; std::getline(sockets, line);) {
    const std::size_t space = line.find(' ');
    if (space == std::string::npos) continue;
    inherited.sockets.push_back({std::atoi(line.substr(0, space).c_str()), line.substr(space + 1)});
  }
  std::istringstream children(take_variable(children_variable));
  for (std::string pid; std::getline(children, pid, ',');)
    if (!pid.empty()) inherited.children.push_back(static_cast<pid_t>(std::atol(pid.c_str())));
  inherited.detached = take_variable(detached_variable) == "1";
  const int passed = systemd::listen_fds();
  for (int i = 0; i < passed; ++i) inherited.sockets.push_back({systemd::first_fd + i, "systemd"});
  return inherited;
}

std::vector<Listener> open_listeners(const std::vector<ListenAddress>& addresses, Inheritance& inherited,
                                     const BindOptions& options) {
  std::vector<Listener> listeners;
  const bool from_systemd = std::any_of(inherited.sockets.begin(), inherited.sockets.end(),
                                        [](const Inheritance::Socket& s) { return s.address == "systemd"; });
  if (from_systemd) log::notice("listening on the sockets systemd passed; listen, host and port are not used");
  std::set<std::string> seen;
  for (const ListenAddress& where : addresses) {
    if (from_systemd) break;
    if (!seen.insert(where.text()).second) continue;  // listed twice: bound once
    bool adopted = false;
    for (Inheritance::Socket& socket : inherited.sockets) {
      if (socket.fd < 0 || socket.address != where.text()) continue;
      listeners.push_back(adopt_listener(std::exchange(socket.fd, -1), socket.address));
      adopted = true;
    }
    if (!adopted) bind_address(where, options, listeners);
  }
  for (Inheritance::Socket& socket : inherited.sockets) {
    if (socket.fd < 0) continue;
    if (from_systemd && socket.address == "systemd") listeners.push_back(adopt_listener(std::exchange(socket.fd, -1), "systemd"));
    else close_inherited(socket);
  }
  return listeners;
}

Relauncher::Relauncher(int argc, char** argv) : arguments_(argv, argv + argc) {
  char path[PATH_MAX];
  const ssize_t length = ::readlink("/proc/self/exe", path, sizeof path - 1);
  executable_ = length > 0 ? std::string(path, static_cast<std::size_t>(length)) : std::string(argv[0]);
  const std::string deleted = " (deleted)";  // the binary was replaced on disk: run the new one
  if (executable_.ends_with(deleted)) executable_.resize(executable_.size() - deleted.size());
  if (::getcwd(path, sizeof path)) directory_ = path;
}

void Relauncher::exec(const std::vector<const Listener*>& listeners, const std::vector<pid_t>& children,
                      bool detached) const {
  std::string sockets, pids;
  for (const Listener* listener : listeners) {
    ::fcntl(listener->fd(), F_SETFD, 0);  // this one survives exec
    sockets += std::to_string(listener->fd()) + " " + listener->address() + "\n";
  }
  for (pid_t pid : children) {
    if (!pids.empty()) pids += ',';
    pids += std::to_string(pid);
  }
  ::setenv(listen_fds_variable, sockets.c_str(), 1);
  ::setenv(children_variable, pids.c_str(), 1);
  if (detached) ::setenv(detached_variable, "1", 1);
  std::vector<char*> argv;
  for (const std::string& argument : arguments_) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  log::notice("restarting: exec {} with {} listening socket(s)", executable_, listeners.size());
  const bool moved = !directory_.empty() && ::chdir(directory_.c_str()) == 0;
  // Until the new image has its handlers, these signals would act by default (TERM, HUP and USR1
  // kill, TTIN stops): they stay blocked -- pending, not lost -- across exec; SignalWatcher
  // unblocks each one as it installs its handler.
  sigset_t held, previous;
  sigemptyset(&held);
  for (int signal : {SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU, SIGCHLD})
    sigaddset(&held, signal);
  ::sigprocmask(SIG_BLOCK, &held, &previous);
  ::execv(executable_.c_str(), argv.data());

  const int error = errno;  // still here: undo, and carry on with the running server
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  for (const Listener* listener : listeners) ::fcntl(listener->fd(), F_SETFD, FD_CLOEXEC);
  for (const char* name : {listen_fds_variable, children_variable, detached_variable}) ::unsetenv(name);
  if (moved && detached && ::chdir("/") != 0) log::warning("{}", system_error_text("chdir(/)", errno));
  log::error("restart failed: execv({}): {}; the running server carries on", executable_, std::strerror(error));
}

}  // namespace netserver
