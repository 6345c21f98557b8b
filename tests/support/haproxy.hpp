#pragma once
// A real HAProxy (Debian's /usr/sbin/haproxy) in front of a server under test: TCP mode, one
// frontend on a free loopback port, one backend server sent a PROXY header. The test makes the
// frontend's listening socket itself and hands it over as fd@3, so the port is free by
// construction and HAProxy needs no port search; HAProxy runs in the foreground (-db) and is
// stopped by its pid.

#include <sys/types.h>

#include <string>
#include <vector>

#include "harness.hpp"

namespace harness {

/// What the HAProxy in front of a test looks like.
struct HaproxySetup {
  std::string backend;                     ///< the server: "127.0.0.1:PORT", "[::1]:PORT", "/path.sock"
  std::string send_proxy = "send-proxy-v2";  ///< server keyword: send-proxy, send-proxy-v2, send-proxy-v2-ssl, send-proxy-v2-ssl-cn
  std::vector<std::string> proxy_v2_options;  ///< proxy-v2-options: crc32c, authority, unique-id, ...
  std::string source;                      ///< the address HAProxy connects to the backend from ("": the kernel's choice)
  std::string frontend_host = "127.0.0.1"; ///< where the frontend listens ("::1" for IPv6)
  std::string bind_options;                ///< more of the bind line: "ssl crt FILE ca-file FILE verify optional"
  std::string server_options;              ///< more of the server line: "check check-send-proxy inter 200ms"
};

/// A running HAProxy. Starts in the constructor (throws when it does not come up within
/// `timeout`: its log says why); stops in the destructor, which fails the test if HAProxy
/// logged an [ALERT], is still running or left its port listening.
class Haproxy {
 public:
  explicit Haproxy(HaproxySetup setup, Seconds timeout = 10s);
  ~Haproxy();
  Haproxy(const Haproxy&) = delete;
  Haproxy& operator=(const Haproxy&) = delete;

  /// The frontend's port on setup.frontend_host.
  int port() const { return port_; }
  /// HAProxy's pid.
  pid_t pid() const { return pid_; }
  /// What HAProxy wrote (stdout and stderr).
  std::string log() const;
  /// The configuration it runs.
  const std::string& config() const { return config_; }
  /// SIGTERM, then SIGKILL after `timeout`; returns the exit status (128 + signal when killed).
  int stop(Seconds timeout = 5s);

 private:
  std::string write_config(const HaproxySetup& setup) const;
  bool answers_stats_socket() const;

  TempDir dir_;
  std::string config_;
  int port_ = 0;
  pid_t pid_ = -1;
  int status_ = -1;
};

}  // namespace harness
