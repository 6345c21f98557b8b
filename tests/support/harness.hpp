#pragma once
// Test harness: launches the real server binaries (Boost.Process) with an inline YAML config on a
// free loopback port, and talks to them with plain blocking sockets with timeouts.

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <boost/process/child.hpp>

namespace harness {

using namespace std::chrono_literals;
using Seconds = std::chrono::duration<double>;

/// A fresh directory under /tmp, removed with everything in it at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  /// Writes `text` to a file in the directory and returns its path.
  std::filesystem::path write(const std::string& name, const std::string& text) const;

 private:
  std::filesystem::path path_;
};

/// Path of a binary built by CMake ("echo_server" -> build/examples/echo_server).
std::string binary(const std::string& name);

/// What a finished process left.
struct Outcome {
  int status = -1;      ///< exit status, or 128 + signal
  std::string output;   ///< stdout and stderr together
};

/// Runs a program to its end (killed after `timeout`).
Outcome run(const std::string& program, const std::vector<std::string>& args, Seconds timeout = 10s);

/// How to start a server.
struct Launch {
  std::vector<std::string> args;                ///< after --config FILE
  std::vector<std::string> wrapper;             ///< runs first and must exec the server (prlimit, ...)
  std::map<std::string, std::string> env;       ///< added to the environment
  bool wait_until_listening = true;             ///< wait for the first "listening on" line

  Launch& with_args(std::vector<std::string> more) {
    args.insert(args.end(), more.begin(), more.end());
    return *this;
  }
  Launch& with_wrapper(std::vector<std::string> command) {
    wrapper = std::move(command);
    return *this;
  }
  Launch& with_env(const std::string& name, const std::string& value) {
    env[name] = value;
    return *this;
  }
  Launch& without_waiting() {
    wait_until_listening = false;
    return *this;
  }
};

/// A server process started with an inline config; stopped (TERM, then KILL) when destroyed.
class ServerProcess {
 public:
  /// Starts `[wrapper...] program --config <file with yaml> args...`, by default waiting until it
  /// logs "listening on". A wrapper must exec the program, so the pid stays the server's.
  ServerProcess(const std::string& program, const std::string& yaml, Launch launch = {});
  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  /// The server's pid.
  pid_t pid() const;
  /// The TCP port of the first "listening on 127.0.0.1:PORT" line.
  /// The port of the first plaintext TCP listener on loopback or any address ("listening on
  /// 127.0.0.1:PORT"); 0 if none is logged within 5 s of the start (each listener's line is its
  /// own write: the first may be read before the next).
  int port() const;
  /// The port of the first "listening on HOST:PORT" line for `host` ("[::1]", "0.0.0.0"), waiting
  /// up to 5 s for it; -1 if none.
  int port_of(const std::string& host) const;
  /// Everything the server logged so far.
  std::string log() const;
  /// Waits until the log contains `text` (true) or `timeout` passes (false).
  bool wait_for_log(const std::string& text, Seconds timeout = 10s) const;
  /// Number of times `text` occurs in the log.
  std::size_t count_in_log(const std::string& text) const;
  /// Sends a signal to the server's pid.
  void signal(int signal_number) const;
  /// Waits for the process to exit; returns its status (128 + signal if killed), or nullopt.
  std::optional<int> wait_exit(Seconds timeout = 15s);
  /// TERM, wait up to `timeout`, then KILL. Returns the exit status.
  int stop(Seconds timeout = 15s);
  /// The directory holding the config and log.
  const TempDir& dir() const { return dir_; }
  /// Log lines at [error] level (a clean run has none).
  std::vector<std::string> error_lines() const;
  /// Declares that this test provokes [error] lines; otherwise any fails the test at the end.
  void expect_errors() { errors_expected_ = true; }

 private:
  // What users would notice, checked at the end of every test: descriptors that grow per
  // connection (before the stop), processes and listening ports left behind (after it).
  void check_descriptors_flat();
  bool scan_port() const;  // port_ from the log as it is now; true once known
  void check_nothing_left();
  void note_descendants();

  TempDir dir_;
  std::filesystem::path log_path_;
  boost::process::child child_;
  mutable int port_ = 0;
  std::optional<int> status_;
  bool errors_expected_ = false;
  std::vector<pid_t> descendants_;  // the server's processes seen before it was stopped
};

/// A blocking TCP or unix-socket client with timeouts.
class Client {
 public:
  /// Connects to 127.0.0.1:port (or `host`, from `source` when given); throws on error.
  explicit Client(int port, const std::string& host = "127.0.0.1", const std::string& source = "");
  /// Connects to a unix socket.
  static Client unix_socket(const std::string& path);
  ~Client();
  Client(Client&& other) noexcept;
  Client& operator=(Client&& other) noexcept;
  Client(const Client&) = delete;

  /// Sends all of `bytes`; false if the connection is gone.
  bool send(const std::string& bytes);
  /// The next line without its CRLF, or nullopt on timeout or EOF.
  std::optional<std::string> read_line(Seconds timeout = 5s);
  /// Reads until EOF (or timeout); returns everything read, including buffered lines.
  std::string read_all(Seconds timeout = 5s);
  /// True when the server closed the connection within `timeout` (unread data is discarded).
  bool closed_by_peer(Seconds timeout = 5s);
  /// True when nothing at all arrives within `quiet` (and the connection stays open).
  bool silent_for(Seconds quiet);
  /// Closes the socket now.
  void close();
  /// Closes with a reset (SO_LINGER 0), like a crashed client.
  void reset();
  /// The descriptor.
  int fd() const { return fd_; }
  /// Local port of this client.
  int local_port() const;

 private:
  Client() = default;
  enum class Fill { data, eof, timeout };
  Fill fill(std::chrono::steady_clock::time_point deadline);
  int fd_ = -1;
  std::string buffer_;
};

/// A unix datagram socket bound at `path`: a stand-in for /dev/log or systemd's NOTIFY_SOCKET.
class DatagramSink {
 public:
  explicit DatagramSink(const std::string& path);
  ~DatagramSink();
  DatagramSink(const DatagramSink&) = delete;
  DatagramSink& operator=(const DatagramSink&) = delete;
  /// The datagrams received until one contains `text` (or `timeout`), joined by newlines.
  std::string until(const std::string& text, Seconds timeout = 5s);
  /// Everything received so far, after reading what arrives within `wait`.
  std::string received(Seconds wait);

 private:
  std::string path_;
  int fd_;
  std::string received_;
};

/// The live child processes of `parent` (from /proc), zombies excluded.
std::vector<pid_t> children_of(pid_t parent);
/// `parent`'s live children, their children, and so on.
std::vector<pid_t> descendants_of(pid_t parent);
/// True while `pid` exists and is not a zombie.
bool alive(pid_t pid);
/// The children of `parent` that exited and were not waited for.
std::vector<pid_t> zombies_of(pid_t parent);

/// Open descriptors of `pid` (entries of /proc/PID/fd); 0 when the process is gone.
std::size_t descriptors_of(pid_t pid);
/// The socket inodes listening on TCP `port` (IPv4 or IPv6, from /proc/net/tcp and tcp6).
std::vector<unsigned long> listening_sockets(int port);
/// True when `pid` holds a descriptor of a socket listening on TCP `port`.
bool holds_listener(pid_t pid, int port);
/// True when connecting to 127.0.0.1:`port` is refused at once.
bool refuses_connections(int port);

/// A TCP port of 127.0.0.1 free right now (bound and released: for a program that binds its
/// own, such as redis-server or prometheus).
int free_port();

/// Polls `condition` every 20 ms until it holds (true) or `timeout` passes (false).
bool eventually(const std::function<bool()>& condition, Seconds timeout = 10s);

/// Reads "pid N" from a banner line; -1 when absent.
long pid_in(const std::string& line);

}  // namespace harness
