#include "edge_options.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "netserver/errors.hpp"

namespace netserver {

namespace {

constexpr std::string_view every_listener = "all";

// The listen address `text` in one spelling (ListenAddress::text), or "" when it is not one.
std::string normalised(std::string_view text) {
  ListenAddress address;
  std::string problem;
  return ListenAddress::parse(text, address, problem) ? address.text() : std::string();
}

std::string check_proxy_listeners(const Value& value) {
  for (const std::string& text : std::get<std::vector<std::string>>(value)) {
    if (text == every_listener) continue;
    ListenAddress address;
    std::string problem;
    if (!ListenAddress::parse(text, address, problem))
      return fmt::format("\"{}\" is neither `all` nor a listen address: {}", text, problem);
  }
  return "";
}

std::string check_network_list(const Value& value) { return check_networks(std::get<std::vector<std::string>>(value)); }

// "where: key: " for an error about `key`'s value.
std::string at(const Config& config, std::string_view key) {
  return fmt::format("{}: {}", config.origin(key).describe(), key);
}

void check_proxy_protocol(const Config& config, const std::vector<std::string>& listen_texts) {
  const std::vector<std::string>& proxied = config.list("proxy_protocol");
  if (proxied.empty()) return;
  if (config.list("proxy_trusted").empty())
    throw ConfigError(fmt::format("{}: proxy_protocol is set, but proxy_trusted is empty: list the networks of the "
                                  "load balancers allowed to send a PROXY header (e.g. proxy_trusted: [10.0.0.0/8])",
                                  config.origin("proxy_protocol").describe()));
  const bool all = std::find(proxied.begin(), proxied.end(), every_listener) != proxied.end();
  if (all && proxied.size() > 1)
    throw ConfigError(fmt::format("{}: `all` already names every listener: drop the other entries",
                                  at(config, "proxy_protocol")));
  if (all) return;
  std::vector<std::string> listening;
  for (const std::string& text : listen_texts) listening.push_back(normalised(text));
  for (const std::string& text : proxied) {
    if (std::find(listening.begin(), listening.end(), normalised(text)) == listening.end())
      throw ConfigError(fmt::format("{}: \"{}\" is not one of the listen addresses ({}); write it as in `listen`, "
                                    "or `all`",
                                    at(config, "proxy_protocol"), text, fmt::join(listen_texts, ", ")));
  }
}

}  // namespace

void add_edge_options(Options& options) {
  options.add(Option::integer("max_connections_per_ip", 0, 0, 1'000'000,
                              "open connections from one address (IPv6: one ipv6_prefix network), counted across "
                              "every process of the server (0: no limit)"));
  options.add(Option::integer("connection_rate_per_ip", 0, 0, 1'000'000,
                              "new connections per second from one address (0: no limit)"));
  options.add(Option::integer("connection_burst_per_ip", 0, 0, 1'000'000,
                              "new connections one address may open at once before connection_rate_per_ip "
                              "applies (0: the rate, one second's worth)"));
  options.add(Option::integer("ipv6_prefix", 64, 1, 128,
                              "IPv6 peers count as one address per network of this many bits (64: one site)"));
  options.add(Option::list("proxy_protocol", {},
                           "listen addresses (as written in `listen`, or `all`) whose clients come through a load "
                           "balancer sending a PROXY protocol header (v1 or v2)")
                  .with_check(check_proxy_listeners));
  options.add(Option::list("proxy_trusted", {},
                           "networks of the load balancers allowed to send a PROXY header: 10.0.0.0/8, ::1/128 "
                           "(required with proxy_protocol; other peers are refused there)")
                  .with_check(check_network_list));
  options.add(Option::duration("proxy_timeout", 5, 0.001, 3600, "seconds a PROXY header may take to arrive"));
}

void check_edge_options(const Config& config, const std::vector<std::string>& listen_texts) {
  check_proxy_protocol(config, listen_texts);
  if (config.integer("connection_burst_per_ip") > 0 && config.integer("connection_rate_per_ip") == 0)
    throw ConfigError(fmt::format("{} has no effect without connection_rate_per_ip (the rate the burst is drawn "
                                  "against)",
                                  config.describe("connection_burst_per_ip")));
}

EdgeSettings edge_settings(const Config& config, std::size_t process_slots) {
  EdgeSettings settings;
  for (const std::string& text : config.list("proxy_protocol")) {
    if (text == every_listener)
      settings.proxy_on_all = true;
    else
      settings.proxy_listeners.push_back(normalised(text));
  }
  for (const std::string& text : config.list("proxy_trusted")) {
    Network network;
    std::string problem;
    if (Network::parse(text, network, problem)) settings.proxy_trusted.push_back(network);  // checked when loaded
  }
  settings.proxy_timeout = config.duration("proxy_timeout");
  settings.ipv6_prefix = static_cast<int>(config.integer("ipv6_prefix"));
  settings.limits.max_connections = static_cast<std::uint32_t>(config.integer("max_connections_per_ip"));
  settings.limits.rate = static_cast<double>(config.integer("connection_rate_per_ip"));
  settings.limits.burst = static_cast<std::uint32_t>(config.integer("connection_burst_per_ip"));
  settings.limits.process_slots = process_slots;
  return settings;
}

bool EdgeSettings::expects_proxy(std::string_view listen_text) const {
  if (proxy_on_all) return true;
  return std::find(proxy_listeners.begin(), proxy_listeners.end(), normalised(listen_text)) != proxy_listeners.end();
}

bool EdgeSettings::trusts(const sockaddr* address, socklen_t length) const {
  char text[INET6_ADDRSTRLEN] = {};
  if (address->sa_family == AF_UNIX) return true;
  if (address->sa_family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in)))
    ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, text, sizeof text);
  else if (address->sa_family == AF_INET6 && length >= static_cast<socklen_t>(sizeof(sockaddr_in6)))
    ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr, text, sizeof text);
  else
    return false;
  return std::any_of(proxy_trusted.begin(), proxy_trusted.end(),
                     [&](const Network& network) { return network.contains(text); });
}

}  // namespace netserver
