#include "netserver/log.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>

#include "log_descriptor.hpp"
#include "netserver/errors.hpp"

namespace netserver::log {

namespace {

std::string_view level_name(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::critical:
    case spdlog::level::err: return "error";
    case spdlog::level::warn: return "warning";
    case spdlog::level::info: return "notice";
    case spdlog::level::debug: return "info";
    default: return "debug";
  }
}

// %* in the pattern: Net::Server's name for the level.
class LevelFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    const std::string_view name = level_name(msg.level);
    dest.append(name.data(), name.data() + name.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<LevelFlag>(); }
};

// The descriptor the log goes to, for a signal handler's last words (log_descriptor.hpp).
std::atomic<int> log_descriptor{STDERR_FILENO};

// Writes each formatted line with one write(2): to stderr/stdout, or to a file opened O_APPEND.
// Sinks lock: a process's stall watcher thread logs while its event loop may be logging too.
class FdSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit FdSink(std::string path) : path_(std::move(path)) {
    if (path_.empty() || path_ == "stderr") fd_ = STDERR_FILENO;
    else if (path_ == "stdout") fd_ = STDOUT_FILENO;
    else if (std::string problem = open_file(); !problem.empty()) throw Error(problem);
  }
  ~FdSink() override { close_file(); }
  FdSink(const FdSink&) = delete;
  FdSink& operator=(const FdSink&) = delete;

  std::string reopen() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!owns_fd_) return "";
    const int old = fd_;
    owns_fd_ = false;
    if (std::string problem = open_file(); !problem.empty()) {
      fd_ = old;
      owns_fd_ = true;
      return problem;
    }
    ::close(old);
    log_descriptor.store(fd_);
    return "";
  }
  bool is_stderr() const { return fd_ == STDERR_FILENO; }
  int fd() const { return fd_; }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    const char* data = line.data();
    std::size_t left = line.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, data, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // nowhere left to report a failing log
      data += n;
      left -= static_cast<std::size_t>(n);
    }
  }
  void flush_() override {}

 private:
  std::string open_file() {
    // As root, a symlink planted in a log directory the service user can write is not followed.
    const int nofollow = ::geteuid() == 0 ? O_NOFOLLOW : 0;
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | nofollow, 0644);
    if (fd < 0) return system_error_text("cannot open log file '" + path_ + "'", errno);
    fd_ = fd;
    owns_fd_ = true;
    return "";
  }
  void close_file() {
    if (owns_fd_) ::close(fd_);
    owns_fd_ = false;
  }

  std::string path_;
  int fd_ = STDERR_FILENO;
  bool owns_fd_ = false;
};

// RFC 3164 datagrams ("<PRI>Nov 21 22:11:00 ident[pid]: message") to the syslog socket.
class SyslogSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  SyslogSink(const SyslogSettings& settings, int facility) : ident_(settings.ident), facility_(facility) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, settings.socket.c_str(), sizeof address.sun_path - 1);
    if (fd_ < 0 || ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      const int error = errno;
      if (fd_ >= 0) ::close(fd_);
      throw Error(system_error_text("cannot log to syslog at " + settings.socket, error));
    }
  }
  ~SyslogSink() override { ::close(fd_); }
  SyslogSink(const SyslogSink&) = delete;
  SyslogSink& operator=(const SyslogSink&) = delete;

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    char stamp[32];
    const std::time_t now = std::chrono::system_clock::to_time_t(msg.time);
    std::tm local{};
    ::localtime_r(&now, &local);
    std::strftime(stamp, sizeof stamp, "%b %e %H:%M:%S", &local);
    const std::string line = fmt::format("<{}>{} {}[{}]: {}", facility_ * 8 + severity(msg.level), stamp, ident_,
                                         ::getpid(), std::string_view(msg.payload.data(), msg.payload.size()));
    (void)::send(fd_, line.data(), line.size(), MSG_DONTWAIT | MSG_NOSIGNAL);  // a full syslog drops lines, never blocks us
  }
  void flush_() override {}

 private:
  static int severity(spdlog::level::level_enum level) {
    switch (level) {
      case spdlog::level::critical:
      case spdlog::level::err: return 3;
      case spdlog::level::warn: return 4;
      case spdlog::level::info: return 5;   // notice
      case spdlog::level::debug: return 6;  // info
      default: return 7;                     // debug
    }
  }
  std::string ident_;
  int facility_;
  int fd_ = -1;
};

const std::vector<std::pair<std::string, int>>& facility_codes() {
  static const std::vector<std::pair<std::string, int>> codes{
      {"kern", 0},    {"user", 1},    {"mail", 2},    {"daemon", 3},  {"auth", 4},      {"syslog", 5},
      {"lpr", 6},     {"news", 7},    {"uucp", 8},    {"cron", 9},    {"authpriv", 10}, {"ftp", 11},
      {"local0", 16}, {"local1", 17}, {"local2", 18}, {"local3", 19}, {"local4", 20},   {"local5", 21},
      {"local6", 22}, {"local7", 23}};
  return codes;
}

std::shared_ptr<FdSink>& current_sink() {
  static std::shared_ptr<FdSink> sink;  // the file or stream sink (null for syslog)
  return sink;
}

}  // namespace

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::error: return spdlog::level::err;
    case LogLevel::warning: return spdlog::level::warn;
    case LogLevel::notice: return spdlog::level::info;
    case LogLevel::info: return spdlog::level::debug;
    case LogLevel::debug: return spdlog::level::trace;
  }
  return spdlog::level::info;
}

const std::vector<std::string>& syslog_facilities() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> all;
    for (const auto& [name, code] : facility_codes()) all.push_back(name);
    return all;
  }();
  return names;
}

void configure(LogLevel level, const std::string& target, const SyslogSettings& syslog) {
  spdlog::sink_ptr sink;
  std::shared_ptr<FdSink> file;
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  if (target == "syslog") {
    int facility = 3;
    for (const auto& [name, code] : facility_codes())
      if (name == syslog.facility) facility = code;
    sink = std::make_shared<SyslogSink>(syslog, facility);
    formatter->set_pattern("%v");  // syslog adds time, program and pid itself
  } else {
    file = std::make_shared<FdSink>(target);
    sink = file;
    formatter->add_flag<LevelFlag>('*').set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%*] [%P] %v");
  }
  sink->set_formatter(std::move(formatter));
  auto logger = std::make_shared<spdlog::logger>("netserver", sink);
  logger->set_level(to_spdlog(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
  log_descriptor.store(file ? file->fd() : STDERR_FILENO);
  current_sink() = std::move(file);
}

std::string probe(const std::string& target, const SyslogSettings& syslog) {
  try {
    if (target == "syslog") SyslogSink(syslog, 3);
    else FdSink sink(target);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

std::string reopen() { return current_sink() ? current_sink()->reopen() : std::string(); }

int descriptor() { return log_descriptor.load(); }

bool to_stderr() { return current_sink() && current_sink()->is_stderr(); }

bool enabled(LogLevel level) { return spdlog::default_logger_raw()->should_log(to_spdlog(level)); }

}  // namespace netserver::log
