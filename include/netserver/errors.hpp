#pragma once
/// Setup errors: thrown while configuring, binding or forking, caught once in Server::main,
/// which prints the message and exits with the error's status.

#include <stdexcept>
#include <string>

namespace netserver {

/// Exit statuses of a netserver program.
namespace exit_status {
inline constexpr int ok = 0;            ///< clean stop, --help, --version, --check-config
inline constexpr int failure = 1;       ///< bind, fork, privilege or other runtime setup failure
inline constexpr int config = 2;        ///< bad command line or configuration
inline constexpr int boot_failed = 3;   ///< a worker process could not start (gunicorn's convention)
}  // namespace exit_status

/// A setup failure with the exit status the program should end with.
class Error : public std::runtime_error {
 public:
  /// `message` is printed as is; `status` is what the program exits with.
  explicit Error(const std::string& message, int status = exit_status::failure)
      : std::runtime_error(message), status_(status) {}
  /// The process exit status this error maps to.
  int status() const noexcept { return status_; }

 private:
  int status_;
};

/// A configuration or command-line problem; the message names where it is (file:line:column).
class ConfigError : public Error {
 public:
  /// Exits with exit_status::config.
  explicit ConfigError(const std::string& message) : Error(message, exit_status::config) {}
};

/// Not a failure: a request to end the program now with `status` (--help, --version,
/// --check-config), after everything above the throw point has been unwound.
class Exit {
 public:
  /// Ends the program with `status` once caught in Server::main.
  explicit Exit(int status) : status_(status) {}
  /// The process exit status.
  int status() const noexcept { return status_; }

 private:
  int status_;
};

/// "what: strerror(errno)" for a failed system call, e.g. "socket(): Too many open files".
std::string system_error_text(const std::string& what, int error_number);

}  // namespace netserver
