#include "netserver/listener.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"

namespace netserver {

namespace {

constexpr int unix_probe_deadline_ms = 1000;

bool parse_port(std::string_view text, std::uint16_t& port, std::string& problem) {
  unsigned value = 0;
  auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || end != text.data() + text.size() || value > 65535) {
    problem = fmt::format("port must be a number from 0 to 65535, got \"{}\"", text);
    return false;
  }
  port = static_cast<std::uint16_t>(value);
  return true;
}

bool valid_host(std::string_view host) {
  return !host.empty() && std::all_of(host.begin(), host.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == '_';
  });
}

// Closes the descriptor unless released.
struct FdGuard {
  int fd;
  ~FdGuard() {
    if (fd >= 0) ::close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

[[noreturn]] void bind_failed(const std::string& address, const std::string& reason) {
  throw Error(fmt::format("cannot bind {}: {}", address, reason));
}

std::string bound_name(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof address;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return "?";
  return format_address(reinterpret_cast<sockaddr*>(&address), length);
}

void set_option(int fd, int level, int name, int value) {
  ::setsockopt(fd, level, name, &value, sizeof value);
}

// Binds one TCP address; on failure returns nothing and says what failed and why.
std::optional<Listener> try_bind_tcp(const sockaddr* address, socklen_t length, bool dual_stack,
                                     const BindOptions& options, std::string& failure, int& error_number) {
  FdGuard fd{::socket(address->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  auto failed = [&](const char* call) {
    failure = call;
    error_number = errno;
    return std::nullopt;
  };
  if (fd.fd < 0) return failed("socket()");
  set_option(fd.fd, SOL_SOCKET, SO_REUSEADDR, 1);
  if (address->sa_family == AF_INET6) set_option(fd.fd, IPPROTO_IPV6, IPV6_V6ONLY, dual_stack ? 0 : 1);
  set_option(fd.fd, IPPROTO_TCP, TCP_NODELAY, 1);  // accepted sockets inherit it
  if (::bind(fd.fd, address, length) != 0) return failed("");
  if (::listen(fd.fd, options.backlog) != 0) return failed("listen()");
  std::string name = bound_name(fd.fd);
  return Listener(fd.release(), std::move(name), address->sa_family, "");
}

Listener bind_tcp(const std::string& shown, const sockaddr* address, socklen_t length, bool dual_stack,
                  const BindOptions& options) {
  std::string failure;
  int error_number = 0;
  std::optional<Listener> listener = try_bind_tcp(address, length, dual_stack, options, failure, error_number);
  if (!listener) bind_failed(shown, failure.empty() ? std::strerror(error_number) : system_error_text(failure, error_number));
  return std::move(*listener);
}

// "*": the IPv6 wildcard with IPv4 mapped in, or the IPv4 wildcard where IPv6 is unavailable
// (containers without IPv6, Net::Server issue #37).
Listener bind_wildcard(const ListenAddress& where, const BindOptions& options) {
  sockaddr_in6 v6{};
  v6.sin6_family = AF_INET6;
  v6.sin6_addr = in6addr_any;
  v6.sin6_port = htons(where.port);
  std::string failure;
  int error_number = 0;
  auto listener = try_bind_tcp(reinterpret_cast<sockaddr*>(&v6), sizeof v6, true, options, failure, error_number);
  if (listener) return std::move(*listener);
  if (error_number != EAFNOSUPPORT && error_number != EADDRNOTAVAIL)
    bind_failed(where.text(), failure.empty() ? std::strerror(error_number) : system_error_text(failure, error_number));
  log::info("IPv6 is unavailable ({}); {} listens on IPv4 only", std::strerror(error_number), where.text());
  sockaddr_in v4{};
  v4.sin_family = AF_INET;
  v4.sin_addr.s_addr = htonl(INADDR_ANY);
  v4.sin_port = htons(where.port);
  return bind_tcp(where.text(), reinterpret_cast<sockaddr*>(&v4), sizeof v4, false, options);
}

void bind_host(const ListenAddress& where, const BindOptions& options, std::vector<Listener>& out) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* results = nullptr;
  const std::string port = std::to_string(where.port);
  if (const int rc = ::getaddrinfo(where.host.c_str(), port.c_str(), &hints, &results); rc != 0)
    bind_failed(where.text(), ::gai_strerror(rc));
  std::set<std::string> seen;
  try {
    for (addrinfo* ai = results; ai; ai = ai->ai_next) {
      if (!seen.insert(format_address(ai->ai_addr, ai->ai_addrlen)).second) continue;
      out.push_back(bind_tcp(where.text(), ai->ai_addr, ai->ai_addrlen, false, options));
    }
  } catch (...) {
    ::freeaddrinfo(results);
    throw;
  }
  ::freeaddrinfo(results);
}

// Connects to the unix socket at `path` without blocking: a live server whose backlog is full
// must not hang the probe. Returns 0 when something accepts connections there, else the errno
// (ECONNREFUSED: nobody listens any more).
int probe_unix_socket(const std::string& path) {
  FdGuard probe{::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (probe.fd < 0) return errno;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  if (::connect(probe.fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) return 0;
  if (errno == EAGAIN) return 0;  // a listener whose backlog is full: alive, merely busy
  if (errno != EINPROGRESS) return errno;
  pollfd ready{probe.fd, POLLOUT, 0};  // not seen for unix sockets on Linux; bounded all the same
  if (::poll(&ready, 1, unix_probe_deadline_ms) <= 0) return 0;  // no answer in time: treat as busy, never steal
  int error = 0;
  socklen_t size = sizeof error;
  ::getsockopt(probe.fd, SOL_SOCKET, SO_ERROR, &error, &size);
  return error;
}

// A unix socket file left by a dead server is replaced; one a live server answers on is an error.
void clear_unix_path(const std::string& shown, const std::string& path) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) return;
  if (!S_ISSOCK(info.st_mode)) bind_failed(shown, "the file exists and is not a socket");
  const int error = probe_unix_socket(path);
  if (error == 0) bind_failed(shown, "another server is listening on it");
  if (error != ECONNREFUSED) bind_failed(shown, system_error_text("connect() to the existing socket", error));
  log::notice("removing stale unix socket {}", path);
  ::unlink(path.c_str());
}

Listener bind_unix(const ListenAddress& where, const BindOptions& options) {
  const std::string shown = where.text();
  if (where.path.size() >= sizeof(sockaddr_un::sun_path)) bind_failed(shown, "the path is too long for a unix socket");
  clear_unix_path(shown, where.path);
  FdGuard fd{::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)};
  if (fd.fd < 0) bind_failed(shown, system_error_text("socket()", errno));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, where.path.c_str(), sizeof address.sun_path - 1);
  if (::bind(fd.fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) bind_failed(shown, std::strerror(errno));
  Listener listener(fd.release(), "unix:" + where.path, AF_UNIX, shown, where.path);
  if (options.unix_mode >= 0 && ::chmod(where.path.c_str(), static_cast<mode_t>(options.unix_mode)) != 0)
    bind_failed(shown, system_error_text("chmod()", errno));
  if (::listen(listener.fd(), options.backlog) != 0) bind_failed(shown, system_error_text("listen()", errno));
  return listener;
}

}  // namespace

const std::vector<std::string>& listen_schemes() {
  static const std::vector<std::string> schemes{"tcp", "tls"};
  return schemes;
}

namespace {

std::string known_schemes() {
  std::string list;
  for (const std::string& scheme : listen_schemes()) list += (list.empty() ? "" : ", ") + scheme + "://";
  return list;
}

// "tls://..." -> "tls"; "" without a scheme. Whatever is shaped like a URL scheme before "://"
// (RFC 3986: letters, digits, + - .) counts, known or not, so that "TLS://" or "ssl://" are named
// as schemes instead of failing as strange addresses.
std::string_view scheme_of(std::string_view text) {
  const std::size_t end = text.find("://");
  if (end == std::string_view::npos || end == 0) return {};
  const std::string_view scheme = text.substr(0, end);
  const bool shaped = std::all_of(scheme.begin(), scheme.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
  });
  return shaped ? scheme : std::string_view();
}

}  // namespace

bool ListenAddress::parse(std::string_view text, ListenAddress& out, std::string& problem) {
  out = ListenAddress{};
  const std::string_view scheme = scheme_of(text);
  if (!scheme.empty()) {
    const auto& known = listen_schemes();
    if (std::find(known.begin(), known.end(), scheme) == known.end()) {
      problem = fmt::format("unknown scheme \"{}://\"; known: {} (or none, for plaintext)", scheme, known_schemes());
      return false;
    }
    text.remove_prefix(scheme.size() + 3);
    if (!scheme_of(text).empty()) {
      problem = fmt::format("\"{}://\" after \"{}://\": an address has one scheme at most", scheme_of(text), scheme);
      return false;
    }
    out.scheme = std::string(scheme);
  }
  const std::string wanted_scheme = out.scheme;
  const bool parsed = parse_plain(text, out, problem);
  out.scheme = wanted_scheme;
  return parsed;
}

bool ListenAddress::parse_plain(std::string_view text, ListenAddress& out, std::string& problem) {
  if (text.starts_with("unix:")) {
    out.kind = Kind::unix_socket;
    out.path = std::string(text.substr(5));
    if (out.path.empty()) {
      problem = "a unix socket needs a path: unix:/path/to/socket";
      return false;
    }
    // Made absolute first (the socket file is removed at exit, after any chdir): the length
    // limit applies to the path that is bound, never to what was typed.
    std::error_code error;
    std::filesystem::path absolute = std::filesystem::absolute(out.path, error);
    if (error) {
      problem = fmt::format("cannot make {} absolute: {}", out.path, error.message());
      return false;
    }
    out.path = absolute.lexically_normal().string();
    if (out.path.size() >= sizeof(sockaddr_un::sun_path))
      problem = fmt::format("the unix socket path {} is {} bytes long; at most {} fit", out.path, out.path.size(),
                            sizeof(sockaddr_un::sun_path) - 1);
    return problem.empty();
  }
  if (text.find(':') == std::string_view::npos) {  // a bare port
    out.host = "*";
    return parse_port(text, out.port, problem);
  }
  std::string_view host, port;
  if (text.starts_with('[')) {
    const std::size_t close = text.find("]:");
    if (close == std::string_view::npos) {
      problem = "an IPv6 address is written [address]:port";
      return false;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    in6_addr ignored{};
    if (::inet_pton(AF_INET6, std::string(host).c_str(), &ignored) != 1) {
      problem = fmt::format("\"{}\" is not an IPv6 address", host);
      return false;
    }
  } else {
    const std::size_t colon = text.rfind(':');
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      problem = "an IPv6 address needs brackets: [::1]:8000";
      return false;
    }
    if (host != "*" && !valid_host(host)) {
      problem = fmt::format("\"{}\" is not a host name or address", host);
      return false;
    }
  }
  out.host = std::string(host);
  return parse_port(port, out.port, problem);
}

std::string ListenAddress::text() const {
  const std::string prefix = scheme == "tcp" ? "" : scheme + "://";
  const std::string_view scheme = prefix;
  if (kind == Kind::unix_socket) return fmt::format("{}unix:{}", scheme, path);
  if (host.find(':') != std::string::npos) return fmt::format("{}[{}]:{}", scheme, host, port);
  return fmt::format("{}{}:{}", scheme, host, port);
}

std::string Listener::scheme() const {
  const std::string_view written = scheme_of(address_);
  return written.empty() ? "tcp" : std::string(written);
}

Listener::Listener(int fd, std::string name, int family, std::string address, std::string unix_path)
    : fd_(fd), name_(std::move(name)), family_(family), address_(std::move(address)), unix_path_(std::move(unix_path)) {}

Listener::~Listener() { reset(); }

Listener::Listener(Listener&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      name_(std::move(other.name_)),
      family_(other.family_),
      address_(std::move(other.address_)),
      unix_path_(std::move(other.unix_path_)) {}

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = std::exchange(other.fd_, -1);
    name_ = std::move(other.name_);
    family_ = other.family_;
    address_ = std::move(other.address_);
    unix_path_ = std::move(other.unix_path_);
  }
  return *this;
}

int Listener::release() {
  unix_path_.clear();
  return std::exchange(fd_, -1);
}

void Listener::reset() {
  if (fd_ >= 0) ::close(fd_);
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
  fd_ = -1;
  unix_path_.clear();
}

void bind_address(const ListenAddress& where, const BindOptions& options, std::vector<Listener>& out) {
  const std::size_t first = out.size();
  if (where.kind == ListenAddress::Kind::unix_socket) out.push_back(bind_unix(where, options));
  else if (where.host == "*") out.push_back(bind_wildcard(where, options));
  else bind_host(where, options, out);
  for (std::size_t i = first; i < out.size(); ++i) out[i].address_ = where.text();
}

Listener adopt_listener(int fd, const std::string& address) {
  int listening = 0;
  socklen_t size = sizeof listening;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &size) != 0 || !listening)
    throw Error(fmt::format("inherited descriptor {} for {} is not a listening socket", fd, address));
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
  sockaddr_storage local{};
  socklen_t length = sizeof local;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length);
  std::string path;
  const std::string_view written = scheme_of(address);
  const std::string_view plain = std::string_view(address).substr(written.empty() ? 0 : written.size() + 3);
  if (local.ss_family == AF_UNIX && plain.starts_with("unix:")) path = plain.substr(5);
  return Listener(fd, bound_name(fd), local.ss_family, address, path);
}

std::string format_address(const sockaddr* address, socklen_t length) {
  char text[INET6_ADDRSTRLEN] = {};
  switch (address->sa_family) {
    case AF_INET: {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(address);
      ::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
      return fmt::format("{}:{}", text, ntohs(v4->sin_port));
    }
    case AF_INET6: {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(address);
      if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
        ::inet_ntop(AF_INET, &v6->sin6_addr.s6_addr[12], text, sizeof text);
        return fmt::format("{}:{}", text, ntohs(v6->sin6_port));
      }
      ::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
      return fmt::format("[{}]:{}", text, ntohs(v6->sin6_port));
    }
    case AF_UNIX: {
      const auto* un = reinterpret_cast<const sockaddr_un*>(address);
      const std::size_t offset = offsetof(sockaddr_un, sun_path);
      if (length <= offset) return "unix:";
      std::string path(un->sun_path, std::strlen(un->sun_path));
      if (path.empty() && length > offset + 1) path = "@" + std::string(un->sun_path + 1, length - offset - 1);
      return "unix:" + path;
    }
    default: return fmt::format("(address family {})", address->sa_family);
  }
}

}  // namespace netserver
