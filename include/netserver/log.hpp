#pragma once
/// Logging with Net::Server's levels (0 error, 1 warning, 2 notice, 3 info, 4 debug) on top of
/// spdlog. Every line carries time, level and pid:
///   [2026-11-21 22:11:00.123] [notice] [4242] listening on 127.0.0.1:8000
/// Each line is one write(2) on an O_APPEND descriptor, so processes sharing a log file never
/// interleave within a line.

#include <string>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

namespace netserver {

/// Net::Server's log levels; `log_level: N` shows levels up to N.
enum class LogLevel { error = 0, warning = 1, notice = 2, info = 3, debug = 4 };

namespace log {

/// The spdlog level a netserver level is written at.
spdlog::level::level_enum to_spdlog(LogLevel level);

/// Where `log_file: syslog` sends lines (RFC 3164 datagrams on a unix socket).
struct SyslogSettings {
  std::string ident = "netserver";     ///< program name in each line
  std::string facility = "daemon";     ///< daemon, user, local0 ... local7, ...
  std::string socket = "/dev/log";     ///< the syslog daemon's socket
};

/// Sends the log to `target` ("stderr", "stdout", "syslog", or a file path opened for appending)
/// and shows levels up to `level`. Throws Error when the file or syslog cannot be opened.
void configure(LogLevel level, const std::string& target, const SyslogSettings& syslog = {});
/// Checks that configure() would succeed with `target` without switching the log: "" or what
/// would fail (a file that cannot be opened, a syslog socket that does not answer).
std::string probe(const std::string& target, const SyslogSettings& syslog = {});
/// The syslog facility names `facility` accepts.
const std::vector<std::string>& syslog_facilities();
/// Reopens the log file (after logrotate renamed it). Returns "" or what failed.
std::string reopen();
/// True when the log goes to the process's stderr (so fatal errors need not be printed twice).
bool to_stderr();
/// True when messages at `level` are written.
bool enabled(LogLevel level);

template <class... Args>
void write(LogLevel level, fmt::format_string<Args...> format, Args&&... args) {
  spdlog::default_logger_raw()->log(to_spdlog(level), format, std::forward<Args>(args)...);
}
template <class... Args>
void error(fmt::format_string<Args...> format, Args&&... args) {
  write(LogLevel::error, format, std::forward<Args>(args)...);
}
template <class... Args>
void warning(fmt::format_string<Args...> format, Args&&... args) {
  write(LogLevel::warning, format, std::forward<Args>(args)...);
}
template <class... Args>
void notice(fmt::format_string<Args...> format, Args&&... args) {
  write(LogLevel::notice, format, std::forward<Args>(args)...);
}
template <class... Args>
void info(fmt::format_string<Args...> format, Args&&... args) {
  write(LogLevel::info, format, std::forward<Args>(args)...);
}
template <class... Args>
void debug(fmt::format_string<Args...> format, Args&&... args) {
  write(LogLevel::debug, format, std::forward<Args>(args)...);
}

}  // namespace log
}  // namespace netserver
