#pragma once
/// The log's descriptor, for code that cannot call the logger: a signal handler's last words
/// (stall_watch.hpp) write there with write(2).

namespace netserver::log {

/// The descriptor log lines go to: the log file's, stdout's or stderr's (stderr for syslog).
/// Async-signal-safe.
int descriptor();

}  // namespace netserver::log
