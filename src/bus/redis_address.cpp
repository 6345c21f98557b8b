#include "bus/redis_address.hpp"

#include <charconv>

#include <fmt/format.h>

namespace netserver::bus {

namespace {

constexpr std::string_view expected =
    "expected redis://[:PASSWORD@]HOST:PORT, redis+unix://[:PASSWORD@]/path/to/redis.sock or "
    "redis-sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME";

// Takes ":PASSWORD@" (or "PASSWORD@") off the front of `rest`. Redis before ACLs has no user
// names, so a "user:" part is refused rather than silently ignored.
std::string take_password(std::string_view& rest, std::string& password) {
  const std::size_t at = rest.rfind('@');
  if (at == std::string_view::npos) return "";
  std::string_view credentials = rest.substr(0, at);
  rest.remove_prefix(at + 1);
  if (!credentials.starts_with(':')) return "a user name is not supported; write the password as :PASSWORD@";
  credentials.remove_prefix(1);
  if (credentials.empty()) return "the password after ':' is empty";
  password = std::string(credentials);
  return "";
}

std::string parse_tcp(std::string_view rest, RedisEndpoint& out) {
  std::string_view host;
  std::string_view port;
  if (rest.starts_with('[')) {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) return "an IPv6 address needs its closing ']'";
    host = rest.substr(1, close - 1);
    rest.remove_prefix(close + 1);
    if (!rest.starts_with(':')) return "a port must follow the address: [::1]:6379";
    port = rest.substr(1);
  } else {
    const std::size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return "the port is missing: HOST:PORT";
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return "write an IPv6 address in brackets: [::1]:6379";
  }
  if (host.empty()) return "the host is missing";
  if (host.find_first_of("/ ?#") != std::string_view::npos) return fmt::format("'{}' is not a host name", host);
  int number = 0;
  const auto [end, error] = std::from_chars(port.data(), port.data() + port.size(), number);
  if (port.empty() || error != std::errc() || end != port.data() + port.size() || number < 1 || number > 65535)
    return fmt::format("the port must be a number from 1 to 65535, got '{}'", port);
  out.host = std::string(host);
  out.port = number;
  return "";
}

// "HOST:PORT[,HOST:PORT...]/MASTER_NAME": the Sentinels, then the master's name.
std::string parse_sentinels(std::string_view rest, RedisAddress& out) {
  const std::size_t slash = rest.rfind('/');
  if (slash == std::string_view::npos) return "the master's name is missing: redis-sentinel://HOST:PORT/MASTER_NAME";
  const std::string_view name = rest.substr(slash + 1);
  rest = rest.substr(0, slash);
  if (name.empty()) return "the master's name after '/' is empty";
  if (name.find_first_of(" \t\r\n/?#,@") != std::string_view::npos) return fmt::format("'{}' is not a master name", name);
  if (rest.empty()) return "no Sentinel is given: HOST:PORT before the '/'";
  for (;;) {
    const std::size_t comma = rest.find(',');
    const std::string_view one = rest.substr(0, comma);
    if (one.empty()) return "an empty Sentinel between commas";
    RedisEndpoint sentinel;
    if (std::string problem = parse_tcp(one, sentinel); !problem.empty()) return fmt::format("Sentinel '{}': {}", one, problem);
    out.sentinels.push_back(std::move(sentinel));
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  out.master_name = std::string(name);
  return "";
}

// The text as written, with any password replaced by "***": "redis://:***@host:6379" (config
// errors go to terminals and logs). Whatever stands before '@' may be a password, even without
// its ':'.
std::string redacted(std::string_view text) {
  const std::size_t scheme = text.find("://");
  const std::size_t at = text.rfind('@');
  if (scheme == std::string_view::npos || at == std::string_view::npos || at < scheme) return std::string(text);
  return fmt::format("{}://:***{}", text.substr(0, scheme), text.substr(at));
}

}  // namespace

std::string RedisAddress::display() const {
  if (is_unix()) return "redis+unix://" + path;
  if (is_sentinel()) {
    std::string text = "redis-sentinel://";
    for (const RedisEndpoint& sentinel : sentinels) {
      if (&sentinel != &sentinels.front()) text += ',';
      text += sentinel.host.find(':') != std::string::npos ? fmt::format("[{}]:{}", sentinel.host, sentinel.port)
                                                             : fmt::format("{}:{}", sentinel.host, sentinel.port);
    }
    return text + "/" + master_name;
  }
  if (host.find(':') != std::string::npos) return fmt::format("redis://[{}]:{}", host, port);
  return fmt::format("redis://{}:{}", host, port);
}

RedisAddress RedisAddress::master_at(std::string master_host, int master_port) const {
  RedisAddress master;
  master.host = std::move(master_host);
  master.port = master_port;
  master.password = password;
  return master;
}

std::string parse_redis_address(std::string_view text, RedisAddress& out) {
  RedisAddress parsed;
  std::string problem;
  std::string_view rest = text;
  if (rest.starts_with("redis+unix://")) {
    rest.remove_prefix(13);
    problem = take_password(rest, parsed.password);
    if (problem.empty() && !rest.starts_with('/')) problem = "the socket path must be absolute: redis+unix:///run/redis.sock";
    if (problem.empty()) parsed.path = std::string(rest);
  } else if (rest.starts_with("redis://")) {
    rest.remove_prefix(8);
    if (rest.ends_with('/')) rest.remove_suffix(1);
    problem = take_password(rest, parsed.password);
    RedisEndpoint endpoint;
    if (problem.empty()) problem = parse_tcp(rest, endpoint);
    parsed.host = std::move(endpoint.host);
    parsed.port = endpoint.port;
  } else if (rest.starts_with("redis-sentinel://")) {
    rest.remove_prefix(17);
    problem = take_password(rest, parsed.password);
    if (problem.empty()) problem = parse_sentinels(rest, parsed);
  } else {
    problem = "unknown scheme";
  }
  if (!problem.empty()) return fmt::format("{} in \"{}\"; {}", problem, redacted(text), expected);
  out = std::move(parsed);
  return "";
}

}  // namespace netserver::bus
