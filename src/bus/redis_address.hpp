#pragma once
// Where the bus's Redis is: the `bus` configuration value, parsed.

#include <string>
#include <string_view>

namespace netserver::bus {

/// A parsed bus address: `redis://[:PASSWORD@]HOST:PORT` or `redis+unix://[:PASSWORD@]/path`.
struct RedisAddress {
  std::string host;      ///< name or address ("[::1]" is stored as "::1"); empty for a unix socket
  int port = 0;          ///< TCP port (1-65535); 0 for a unix socket
  std::string path;      ///< unix socket path; empty for TCP
  std::string password;  ///< sent with AUTH on every new connection; empty: no AUTH

  /// True for a unix socket.
  bool is_unix() const { return !path.empty(); }
  /// The address without its password, for logs: "redis://127.0.0.1:6379".
  std::string display() const;
};

/// Parses `text` into `out`. Returns "" on success, else what is wrong and what is valid.
std::string parse_redis_address(std::string_view text, RedisAddress& out);

}  // namespace netserver::bus
