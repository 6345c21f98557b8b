#include "restart.hpp"

#include <fcntl.h>
#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "systemd.hpp"

namespace netserver {

namespace {

constexpr const char* listen_fds_variable = "NETSERVER_LISTEN_FDS";  // "FD ADDRESS" lines
constexpr const char* detached_variable = "NETSERVER_DETACHED";      // "1"
constexpr const char* kept_variable = "NETSERVER_KEPT_FDS";          // "NAME=FD NAME=FD"

std::map<std::string, int>& kept() {  // this image's, for the next
  static std::map<std::string, int> descriptors;
  return descriptors;
}
std::map<std::string, int>& inherited_kept() {  // the previous image's, for this one
  static std::map<std::string, int> descriptors;
  return descriptors;
}

std::string take_variable(const char* name) {
  const char* value = std::getenv(name);
  std::string text = value ? value : "";
  ::unsetenv(name);
  return text;
}

void close_inherited(Inheritance::Socket& socket) {
  log::notice("closing inherited listener {}: it is no longer configured", socket.address);
  ::close(socket.fd);
  const std::size_t scheme_end = socket.address.find("://");
  const std::string_view plain =
      std::string_view(socket.address).substr(scheme_end == std::string::npos ? 0 : scheme_end + 3);
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
  inherited.detached = take_variable(detached_variable) == "1";
  std::istringstream kept_fds(take_variable(kept_variable));
  for (std::string item; kept_fds >> item;) {
    const std::size_t equals = item.find('=');
    if (equals != std::string::npos) inherited_kept()[item.substr(0, equals)] = std::atoi(item.c_str() + equals + 1);
  }
  const int passed = systemd::listen_fds();
  for (int i = 0; i < passed; ++i) inherited.sockets.push_back({systemd::first_fd + i, "systemd"});
  return inherited;
}

std::vector<Listener> open_listeners(const std::vector<ListenAddress>& addresses, Inheritance& inherited,
                                     const BindOptions& options) {
  std::vector<Listener> listeners;
  const bool from_systemd = std::any_of(inherited.sockets.begin(), inherited.sockets.end(),
                                        [](const Inheritance::Socket& s) { return s.address == "systemd"; });
  if (from_systemd) log::notice("serving the sockets systemd passed; listen, host and port are not used");
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

void keep_across_restart(const std::string& name, int fd) {
  if (fd < 0) kept().erase(name);
  else kept()[name] = fd;
}

int take_inherited_descriptor(const std::string& name) {
  const auto found = inherited_kept().find(name);
  if (found == inherited_kept().end()) return -1;
  const int fd = found->second;
  inherited_kept().erase(found);
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

void close_untaken_descriptors() {
  for (const auto& [name, fd] : inherited_kept()) ::close(fd);
  inherited_kept().clear();
}

Relauncher::Relauncher(int argc, char** argv) : arguments_(argv, argv + argc) {
  char path[PATH_MAX];
  const ssize_t length = ::readlink("/proc/self/exe", path, sizeof path - 1);
  executable_ = length > 0 ? std::string(path, static_cast<std::size_t>(length)) : std::string(argv[0]);
  const std::string deleted = " (deleted)";  // the binary was replaced on disk: run the new one
  if (executable_.ends_with(deleted)) executable_.resize(executable_.size() - deleted.size());
  if (::getcwd(path, sizeof path)) directory_ = path;
}

pid_t Relauncher::start(const std::vector<const Listener*>& listeners, const std::vector<int>& descriptors,
                        const std::vector<std::pair<std::string, std::string>>& environment, bool detached) const {
  std::string sockets;
  for (const Listener* listener : listeners) sockets += std::to_string(listener->fd()) + " " + listener->address() + "\n";
  std::string kept_fds;
  for (const auto& [name, fd] : kept()) kept_fds += (kept_fds.empty() ? "" : " ") + name + "=" + std::to_string(fd);
  std::vector<char*> argv;
  for (const std::string& argument : arguments_) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  log::notice("restarting: exec {} with {} listening socket(s) in a new process beside this one", executable_,
              listeners.size());
  // Until the new image has its handlers, these signals would act by default (TERM, HUP and USR1
  // kill, TTIN stops): they stay blocked -- pending, not lost -- across fork and exec;
  // the new image's SignalWatcher reads them from its signalfd, still blocked.
  sigset_t held, previous;
  sigemptyset(&held);
  for (int signal : {SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU, SIGCHLD})
    sigaddset(&held, signal);
  ::sigprocmask(SIG_BLOCK, &held, &previous);
  const pid_t pid = ::fork();
  if (pid != 0) {
    const int error = errno;
    ::sigprocmask(SIG_SETMASK, &previous, nullptr);
    if (pid < 0) log::error("{}", system_error_text("HUP: fork() for the new image; the running server carries on", error));
    return pid;
  }
  // The new process: only what the new image inherits stays open across the exec.
  for (const Listener* listener : listeners) ::fcntl(listener->fd(), F_SETFD, 0);
  for (const auto& [name, fd] : kept()) ::fcntl(fd, F_SETFD, 0);
  for (int fd : descriptors)
    if (fd >= 0) ::fcntl(fd, F_SETFD, 0);
  ::setenv(kept_variable, kept_fds.c_str(), 1);
  ::setenv(listen_fds_variable, sockets.c_str(), 1);
  if (detached) ::setenv(detached_variable, "1", 1);
  for (const auto& [name, value] : environment) ::setenv(name.c_str(), value.c_str(), 1);
  if (!directory_.empty() && ::chdir(directory_.c_str()) != 0) ::_exit(exit_status::failure);
  ::execv(executable_.c_str(), argv.data());
  const std::string failure = fmt::format("HUP: execv({}): {}\n", executable_, std::strerror(errno));
  [[maybe_unused]] const ssize_t ignored = ::write(STDERR_FILENO, failure.data(), failure.size());
  ::_exit(127);
}

}  // namespace netserver
