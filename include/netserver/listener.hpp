#pragma once
/// Listening sockets: the addresses a server is told to listen on and the bound sockets.
/// Listeners are plain file descriptors bound by the parent before anything forks, so children,
/// a re-exec'd server or systemd can share them.

#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace netserver {

/// The schemes a listen address may start with, each naming the transport its clients speak:
/// "tcp" (plaintext, also what an address without a scheme means) and "tls".
const std::vector<std::string>& listen_schemes();

/// One configured address: "127.0.0.1:8000", "*:8000", "[::1]:8000", "localhost:8000",
/// "unix:/run/app.sock"; any of them after a scheme: "tls://[::]:8443" for a TLS listener,
/// "tcp://127.0.0.1:8000" (the same as without).
struct ListenAddress {
  /// A TCP address (host and port) or a unix socket (path).
  enum class Kind { tcp, unix_socket };
  Kind kind = Kind::tcp;     ///< which of the two
  std::string scheme = "tcp";  ///< what clients speak: one of listen_schemes()
  std::string host;          ///< "*" for every address; a literal or a name otherwise
  std::uint16_t port = 0;    ///< 0: the kernel picks a free port
  std::string path;          ///< unix socket path, absolute and normalised

  /// Parses `text`; on failure returns false and says why in `problem`. A relative unix socket
  /// path is made absolute against the current directory before its length is checked.
  static bool parse(std::string_view text, ListenAddress& out, std::string& problem);
  /// The address in its normal form, as listeners and restarts name it: "127.0.0.1:8000",
  /// "[::1]:8000", "unix:/path", "tls://127.0.0.1:8443" (a "tcp://" prefix is dropped).
  std::string text() const;
  /// True for a TLS listener.
  bool tls() const { return scheme == "tls"; }

 private:
  static bool parse_plain(std::string_view text, ListenAddress& out, std::string& problem);
};

/// Binding options.
struct BindOptions {
  int backlog = 4096;   ///< listen(2) queue length (the kernel caps it at net.core.somaxconn)
  int unix_mode = -1;   ///< chmod for unix socket files; -1 leaves the umask's choice
};

/// A bound, listening socket. Owns its descriptor (close-on-exec, non-blocking); a unix socket's
/// file is removed when the listener that created it is destroyed.
class Listener {
 public:
  /// `address` is the configured text this listener answers for ("127.0.0.1:0"); `unix_path`,
  /// when given, is removed with the listener.
  Listener(int fd, std::string name, int family, std::string address, std::string unix_path = {});
  ~Listener();
  /// Takes over the descriptor (and the unix socket file); `other` is left empty.
  Listener(Listener&& other) noexcept;
  /// Closes this listener, then takes over `other`'s descriptor.
  Listener& operator=(Listener&& other) noexcept;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  /// The descriptor.
  int fd() const { return fd_; }
  /// The bound address ("127.0.0.1:41234" when port 0 was asked for).
  const std::string& name() const { return name_; }
  /// AF_INET, AF_INET6 or AF_UNIX.
  int family() const { return family_; }
  /// The configured address ("127.0.0.1:0", "unix:/run/x.sock", "tls://127.0.0.1:0", "systemd").
  const std::string& address() const { return address_; }
  /// What its clients speak ("tcp", "tls"): the scheme of its configured address.
  std::string scheme() const;
  /// True for a TLS listener (configured as "tls://ADDRESS").
  bool tls() const { return scheme() == "tls"; }
  /// Gives up the descriptor (returned) and the socket file (left in place): the listener is empty.
  int release();
  /// The socket file, for a unix socket this listener created ("" otherwise).
  const std::string& unix_path() const { return unix_path_; }

 private:
  friend void bind_address(const ListenAddress& where, const BindOptions& options, std::vector<Listener>& out);
  void reset();
  int fd_ = -1;
  std::string name_;
  int family_ = AF_UNSPEC;
  std::string address_;
  std::string unix_path_;
};

/// Binds one address, appending its listener(s) to `out` (a host name may resolve to several;
/// "*" is the IPv6 wildcard accepting IPv4 too, or the IPv4 wildcard where IPv6 is unavailable).
/// Throws Error("cannot bind <addr>: <reason>").
void bind_address(const ListenAddress& where, const BindOptions& options, std::vector<Listener>& out);
/// Takes over a listening socket inherited from a restart or from systemd; `address` says what
/// it was configured as. The unix socket file of an inherited "unix:" address is removed with the
/// listener; systemd's sockets are systemd's. Throws Error when `fd` is not a listening socket.
Listener adopt_listener(int fd, const std::string& address);

/// "127.0.0.1:5555", "[::1]:5555" (IPv4-mapped IPv6 shown as IPv4), "unix:/path" or "unix:".
std::string format_address(const sockaddr* address, socklen_t length);

}  // namespace netserver
