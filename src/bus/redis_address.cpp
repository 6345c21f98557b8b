#include "bus/redis_address.hpp"

#include <charconv>

#include <fmt/format.h>

namespace netserver::bus {

namespace {

constexpr std::string_view expected =
    "expected redis://[:PASSWORD@]HOST:PORT or redis+unix://[:PASSWORD@]/path/to/redis.sock";

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

std::string parse_tcp(std::string_view rest, RedisAddress& out) {
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
  if (host.find(':') != std::string::npos) return fmt::format("redis://[{}]:{}", host, port);
  return fmt::format("redis://{}:{}", host, port);
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
    if (problem.empty()) problem = parse_tcp(rest, parsed);
  } else {
    problem = "unknown scheme";
  }
  if (!problem.empty()) return fmt::format("{} in \"{}\"; {}", problem, redacted(text), expected);
  out = std::move(parsed);
  return "";
}

}  // namespace netserver::bus
