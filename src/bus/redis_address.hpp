#pragma once
// Where the bus's Redis is: the `bus` configuration value, parsed.

#include <string>
#include <string_view>
#include <vector>

namespace netserver::bus {

/// One TCP end point: a Sentinel's.
struct RedisEndpoint {
  std::string host;  ///< name or address ("[::1]" is stored as "::1")
  int port = 0;      ///< 1-65535
};

/// A parsed bus address: `redis://[:PASSWORD@]HOST:PORT`, `redis+unix://[:PASSWORD@]/path`, or
/// `redis-sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME` (the master is asked of
/// the Sentinels; the password is the master's, the Sentinels' is bus_sentinel_password).
struct RedisAddress {
  std::string host;      ///< name or address ("[::1]" is stored as "::1"); empty for a unix socket
  int port = 0;          ///< TCP port (1-65535); 0 for a unix socket
  std::string path;      ///< unix socket path; empty for TCP
  std::string password;  ///< sent with AUTH on every new connection; empty: no AUTH
  std::vector<RedisEndpoint> sentinels;  ///< redis-sentinel://: where to ask for the master
  std::string master_name;               ///< redis-sentinel://: the master's name; empty otherwise

  /// True for a unix socket.
  bool is_unix() const { return !path.empty(); }
  /// True for redis-sentinel://: host and port are empty until a Sentinel names the master.
  bool is_sentinel() const { return !master_name.empty(); }
  /// The address without its password, for logs: "redis://127.0.0.1:6379",
  /// "redis-sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster".
  std::string display() const;
  /// The master at `host`:`port` with this address's password (a Sentinel's answer).
  RedisAddress master_at(std::string host, int port) const;
};

/// Parses `text` into `out`. Returns "" on success, else what is wrong and what is valid.
std::string parse_redis_address(std::string_view text, RedisAddress& out);

}  // namespace netserver::bus
