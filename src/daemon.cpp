#include "daemon.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "restart.hpp"

namespace netserver {

namespace {

// The write end of the pipe to the original process while it waits for the daemon (-1: none).
int waiting_parent = -1;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool parse_id(const std::string& text, unsigned& id) {
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), id);
  return !text.empty() && error == std::errc() && end == text.data() + text.size();
}

std::string process_name(pid_t pid) {
  std::string name = read_text(fmt::format("/proc/{}/comm", pid));
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  return name.empty() ? "?" : name;
}

void redirect(int fd, const std::string& path, int flags) {
  const int target = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
  if (target < 0) throw Error(system_error_text("detaching: open(" + path + ")", errno));
  ::dup2(target, fd);
  ::close(target);
}

}  // namespace

// --- pid file ------------------------------------------------------------------------------

PidFile::PidFile(const std::string& path) : path_(std::filesystem::absolute(path).lexically_normal().string()) {
  const std::filesystem::path absolute(path_);
  name_ = absolute.filename().string();
  // A server restarted after giving up root may not open the directory: it then only keeps the
  // file it already wrote (write() says so if it would need more).
  directory_ = ::open(absolute.parent_path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (directory_ < 0) directory_error_ = errno;
}

PidFile::~PidFile() {
  if (directory_ >= 0) ::close(directory_);
  if (lock_ >= 0) ::close(lock_);
}

void PidFile::check() const {
  check_place();
  check_unlocked();
  struct stat info {};
  if (::lstat(path_.c_str(), &info) != 0) return;
  const long pid = read_pid();
  if (pid <= 0) {
    log::notice("pid file {} is empty or does not hold a pid; it will be replaced", path_);
    return;
  }
  if (pid == ::getpid()) return;  // this process, restarted in place
  if (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)
    throw Error(fmt::format("pid file {} names a running process ({} {}): is the server already running? "
                            "Stop it, or remove the file",
                            path_, pid, process_name(static_cast<pid_t>(pid))));
  log::notice("pid file {} names process {}, which is gone; it will be replaced", path_, pid);
}

// What write() will need, checked before anything is bound: an existing directory, and no
// directory where the file goes. A restarted image that already owns the file needs neither.
void PidFile::check_place() const {
  if (read_pid() == ::getpid()) return;
  if (directory_ < 0) throw Error(system_error_text("pid_file: cannot open the directory of " + path_, directory_error_));
  struct stat info {};
  if (::lstat(path_.c_str(), &info) == 0 && S_ISDIR(info.st_mode))
    throw Error(fmt::format("pid_file: {} is a directory", path_));
}

// Another server that holds the lock (it may not have written its pid yet: two started at once).
void PidFile::check_unlocked() const {
  if (lock_ >= 0 || read_pid() == ::getpid()) return;
  const int fd = ::open(path_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  const bool free = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
  ::close(fd);
  if (!free) throw_locked();
}

void PidFile::throw_locked() const {
  const long holder = read_pid();
  throw Error(fmt::format("pid file {} is locked by another server{}: is it already running? Stop it first", path_,
                          holder > 0 ? fmt::format(" (pid {} {})", holder, process_name(static_cast<pid_t>(holder)))
                                     : std::string(" that is still starting")));
}

// The lock is the file itself, opened once and kept: a restarted image takes the descriptor its
// previous image kept (a new open would conflict with the old image's lock in this very process).
// Only a plain file of this user's, with one name, is locked and written: never a symlink or a hard
// link planted in a shared directory.
void PidFile::lock() {
  if (lock_ >= 0) return;
  const int inherited = take_inherited_descriptor("pid_lock");
  struct stat held {}, named {};
  if (inherited >= 0 && ::fstat(inherited, &held) == 0 && ::lstat(path_.c_str(), &named) == 0 &&
      held.st_ino == named.st_ino && held.st_dev == named.st_dev) {
    lock_ = inherited;
    keep_across_restart("pid_lock", lock_);
    return;
  }
  if (inherited >= 0) ::close(inherited);  // another file now
  if (directory_ < 0) throw Error(system_error_text("pid_file: cannot open the directory of " + path_, directory_error_));
  const int fd = ::openat(directory_, name_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(system_error_text("cannot open pid file " + path_, errno));
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode) || info.st_nlink != 1 || info.st_uid != ::geteuid()) {
    ::close(fd);
    throw Error(fmt::format("pid_file: {} is not a plain file of this user's (uid {}); remove it or choose another path",
                            path_, ::geteuid()));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    ::close(fd);
    if (error == EWOULDBLOCK) throw_locked();
    throw Error(system_error_text("cannot lock pid file " + path_, error));
  }
  lock_ = fd;
  keep_across_restart("pid_lock", lock_);
}

// Written over the old content in place (the lock is this file): the new text first, then the
// file cut to its length, so a reader never finds it empty.
void PidFile::write() {
  if (read_pid() == ::getpid()) {  // restarted in place: it is right already (and root may be gone)
    written_ = ::getpid();
    return;
  }
  lock();
  const std::string text = std::to_string(::getpid()) + "\n";
  if (::pwrite(lock_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()) ||
      ::ftruncate(lock_, static_cast<off_t>(text.size())) != 0)
    throw Error(system_error_text("cannot write pid file " + path_, errno));
  written_ = ::getpid();
}

long PidFile::read_pid() const {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return 0;
  char text[32] = {};
  const ssize_t got = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  return got > 0 ? parse_pid(std::string_view(text, static_cast<std::size_t>(got))) : 0;
}

long parse_pid(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.remove_suffix(1);
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  long pid = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), pid);
  // Only what fits a pid_t is a pid: 4294967297 must not become pid 1 on the way to kill().
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || pid <= 0 ||
      pid > std::numeric_limits<pid_t>::max())
    return 0;
  return pid;
}

void PidFile::remove() {
  if (written_ == 0 || written_ != ::getpid()) return;
  const long pid = read_pid();
  if (pid != 0 && pid != written_) return;  // another server owns it now
  const int removed = directory_ >= 0 ? ::unlinkat(directory_, name_.c_str(), 0) : ::unlink(path_.c_str());
  if (lock_ >= 0) {  // the lock goes with the name: a server starting now makes a new file
    keep_across_restart("pid_lock", -1);
    ::close(lock_);
    lock_ = -1;
  }
  if (removed != 0 && errno != ENOENT)
    log::warning("{}", system_error_text("cannot remove pid file " + path_, errno));
  written_ = 0;
}

std::string PidFile::restart_problem(const std::string& path) {
  PidFile file(path);
  if (file.read_pid() == ::getpid()) return "";  // the new image keeps it as it is
  const std::string directory = std::filesystem::path(file.path()).parent_path().string();
  if (::access(directory.c_str(), W_OK | X_OK) == 0) return "";
  return system_error_text(fmt::format("pid_file: the restarted server (uid {}) could not write {}", ::geteuid(), file.path()),
                           errno);
}

// --- background ----------------------------------------------------------------------------

void detach(const std::string& stderr_path) {
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) throw Error(system_error_text("detaching: pipe()", errno));
  const pid_t pid = ::fork();
  if (pid < 0) throw Error(system_error_text("detaching: fork()", errno));
  if (pid > 0) {  // the original process: wait for the daemon's word, then leave
    ::close(ready[1]);
    std::string message;
    char buffer[512];
    for (ssize_t n; (n = ::read(ready[0], buffer, sizeof buffer)) != 0;) {
      if (n > 0) message.append(buffer, static_cast<std::size_t>(n));
      else if (errno != EINTR) break;
    }
    if (message == "ready") ::_exit(exit_status::ok);
    std::fprintf(stderr, "%s\n", message.empty() ? "the server died while starting in the background" : message.c_str());
    ::_exit(exit_status::failure);
  }
  ::close(ready[0]);
  waiting_parent = ready[1];
  if (::setsid() < 0) throw Error(system_error_text("detaching: setsid()", errno));
  if (::chdir("/") != 0) throw Error(system_error_text("detaching: chdir(/)", errno));
  redirect(STDIN_FILENO, "/dev/null", O_RDONLY);
  redirect(STDOUT_FILENO, "/dev/null", O_WRONLY);
  redirect(STDERR_FILENO, stderr_path.empty() ? "/dev/null" : stderr_path, O_WRONLY | O_CREAT | O_APPEND);
}

void daemon_ready() {
  if (waiting_parent < 0) return;
  (void)::write(waiting_parent, "ready", 5);
  ::close(waiting_parent);
  waiting_parent = -1;
}

void daemon_failed(const std::string& message) {
  if (waiting_parent < 0) return;
  (void)::write(waiting_parent, message.data(), message.size());
  ::close(waiting_parent);
  waiting_parent = -1;
}

// --- privileges ----------------------------------------------------------------------------

Identity Identity::resolve(const std::string& user, const std::string& group) {
  Identity identity;
  identity.user = user;
  identity.group = group;
  if (!user.empty()) {
    identity.change_user = true;
    unsigned id = 0;
    const passwd* entry = parse_id(user, id) ? ::getpwuid(id) : ::getpwnam(user.c_str());
    if (entry) {
      identity.uid = entry->pw_uid;
      identity.gid = entry->pw_gid;  // the user's own group unless `group` says otherwise
    } else if (parse_id(user, id)) {
      identity.uid = id;
      identity.gid = id;
    } else {
      throw ConfigError(fmt::format("user: there is no user '{}' on this system", user));
    }
  }
  if (!group.empty()) {
    identity.change_group = true;
    unsigned id = 0;
    const struct group* entry = parse_id(group, id) ? ::getgrgid(id) : ::getgrnam(group.c_str());
    if (entry) identity.gid = entry->gr_gid;
    else if (parse_id(group, id)) identity.gid = id;
    else throw ConfigError(fmt::format("group: there is no group '{}' on this system", group));
  } else if (identity.change_user) {
    identity.change_group = true;
  }
  return identity;
}

void drop_privileges(const Identity& identity, const std::string& chroot_directory,
                     const std::vector<std::string>& owned) {
  if (!identity.change_user && !identity.change_group && chroot_directory.empty()) return;
  if (::geteuid() != 0) {
    const bool already = (!identity.change_user || identity.uid == ::geteuid()) &&
                         (!identity.change_group || identity.gid == ::getegid()) && chroot_directory.empty();
    if (already) return;
    throw Error(fmt::format("cannot switch to user '{}' / group '{}'{}: not running as root (uid {})", identity.user,
                            identity.group, chroot_directory.empty() ? "" : " or chroot", ::geteuid()));
  }
  for (const std::string& path : owned)  // lchown: a symlink planted there is not followed
    if (::lchown(path.c_str(), identity.change_user ? identity.uid : static_cast<uid_t>(-1), identity.gid) != 0)
      log::warning("{}", system_error_text("chown(" + path + ")", errno));
  if (!chroot_directory.empty()) {
    if (::chdir(chroot_directory.c_str()) != 0 || ::chroot(chroot_directory.c_str()) != 0 || ::chdir("/") != 0)
      throw Error(system_error_text("cannot chroot to " + chroot_directory, errno));
    log::notice("chroot to {}", chroot_directory);
  }
  if (identity.change_group) {
    const int groups = identity.change_user ? ::initgroups(identity.user.c_str(), identity.gid) : ::setgroups(0, nullptr);
    if (groups != 0 && identity.change_user && ::setgroups(0, nullptr) != 0)
      throw Error(system_error_text("cannot drop supplementary groups", errno));
    if (::setgid(identity.gid) != 0)
      throw Error(system_error_text(fmt::format("cannot switch to group {} (gid {})", identity.group, identity.gid), errno));
  }
  if (identity.change_user && ::setuid(identity.uid) != 0)
    throw Error(system_error_text(fmt::format("cannot switch to user {} (uid {})", identity.user, identity.uid), errno));
  const bool stuck = (!identity.change_user || (::getuid() == identity.uid && ::geteuid() == identity.uid)) &&
                     ::getegid() == identity.gid && (identity.uid == 0 || !identity.change_user || ::setuid(0) != 0);
  if (!stuck) throw Error("the switch of user and group did not take effect; refusing to run");
  log::notice("running as uid {}, gid {}", ::geteuid(), ::getegid());
}

}  // namespace netserver
