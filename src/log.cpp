#include "netserver/log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>

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

// Writes each formatted line with one write(2): to stderr/stdout, or to a file opened O_APPEND.
class FdSink : public spdlog::sinks::base_sink<spdlog::details::null_mutex> {
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
    if (!owns_fd_) return "";
    const int old = fd_;
    owns_fd_ = false;
    if (std::string problem = open_file(); !problem.empty()) {
      fd_ = old;
      owns_fd_ = true;
      return problem;
    }
    ::close(old);
    return "";
  }
  bool is_stderr() const { return fd_ == STDERR_FILENO; }

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
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
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

std::shared_ptr<FdSink>& current_sink() {
  static std::shared_ptr<FdSink> sink;
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

void configure(LogLevel level, const std::string& target) {
  auto sink = std::make_shared<FdSink>(target);
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  formatter->add_flag<LevelFlag>('*').set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%*] [%P] %v");
  sink->set_formatter(std::move(formatter));
  auto logger = std::make_shared<spdlog::logger>("netserver", sink);
  logger->set_level(to_spdlog(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(std::move(logger));
  current_sink() = std::move(sink);
}

std::string reopen() { return current_sink() ? current_sink()->reopen() : std::string(); }

bool to_stderr() { return !current_sink() || current_sink()->is_stderr(); }

bool enabled(LogLevel level) { return spdlog::default_logger_raw()->should_log(to_spdlog(level)); }

}  // namespace netserver::log
