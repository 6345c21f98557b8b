#pragma once
/// What turns a foreground program into a well-behaved service: the pid file, detaching into the
/// background, and giving up root.

#include <sys/types.h>

#include <string>
#include <string_view>
#include <vector>

namespace netserver {

/// The pid file: refuses to start over a live server, replaces a stale or empty file, and is
/// removed at exit only while it still names this process. It is held under an flock(2) from
/// check() to the process's end (handed over across a restart), so that of two servers started
/// at once with the same file one wins and the other exits with a clear message.
class PidFile {
 public:
  /// `path` is made absolute; its directory is opened now, so the file can still be removed after
  /// a chdir or chroot.
  explicit PidFile(const std::string& path);
  ~PidFile();
  PidFile(const PidFile&) = delete;
  PidFile& operator=(const PidFile&) = delete;

  /// Throws Error when the file names a live process other than this one, when another server
  /// holds its lock, or when it could not be written (its directory is missing, the path is a
  /// directory); logs a stale or empty file it will replace. Changes nothing (--check-config).
  void check() const;
  /// Creates and locks the file (the start, after check()). Throws Error when another server took
  /// the lock meanwhile, or when the path is a link or not this user's plain file.
  void lock();
  /// Writes this process's pid into the locked file; leaves a file that names this process
  /// already (a restart in place) as it is.
  void write();
  /// Removes the file if it still holds the pid this process wrote.
  void remove();
  /// The absolute path.
  const std::string& path() const { return path_; }
  /// "" when a restarted image of this process could take over `path` (it names this process,
  /// or its directory is writable), else why not.
  static std::string restart_problem(const std::string& path);
  /// What write() will need, without touching the file: an existing directory, no directory
  /// where the file goes. --check-config runs it (never check(): the server may be running).
  void check_place() const;

 private:
  long read_pid() const;  // 0 when missing, unreadable or not a pid
  void check_unlocked() const;
  [[noreturn]] void throw_locked() const;
  std::string path_;
  std::string name_;
  int directory_ = -1;
  int directory_error_ = 0;
  pid_t written_ = 0;
  int lock_ = -1;  // the file, open and flock()ed for the process's life
};

/// The pid in a pid file's text (digits, surrounding blanks and a line end allowed), or 0 when
/// the text is not a pid that fits pid_t.
long parse_pid(std::string_view text);

/// Detaches into the background (fork, setsid, chdir /, standard input and output to /dev/null,
/// standard error to `stderr_path` or /dev/null). The original process waits until the daemon
/// calls daemon_ready() -- then exits 0 -- or reports a failure with daemon_failed() -- then
/// prints it and exits 1. Throws Error when fork fails.
void detach(const std::string& stderr_path);
/// In a detached process: tells the waiting original process that the server is up.
void daemon_ready();
/// In a detached process: hands `message` to the waiting original process, which prints it.
void daemon_failed(const std::string& message);

/// Who to run as, resolved from `user` / `group` (names or numeric ids).
struct Identity {
  bool change_user = false;
  bool change_group = false;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string user;   ///< as configured, for messages and initgroups
  std::string group;
  /// Resolves the names; throws ConfigError for an unknown user or group.
  static Identity resolve(const std::string& user, const std::string& group);
};

/// Applies `chroot` and the identity (after bind, when started as root). Paths in `owned` (pid
/// file, log file, unix sockets) are handed to the new owner first, so the server can still
/// remove or reopen them. Throws Error if anything fails: never a silent run as root.
void drop_privileges(const Identity& identity, const std::string& chroot_directory,
                     const std::vector<std::string>& owned);

}  // namespace netserver
