#include "observability_options.hpp"

#include <fmt/format.h>

#include "netserver/access.hpp"
#include "netserver/errors.hpp"
#include "netserver/listener.hpp"

namespace netserver {

namespace {

std::string check_status_listen(const Value& value) {
  for (const std::string& text : std::get<std::vector<std::string>>(value)) {
    ListenAddress address;
    std::string problem;
    if (!ListenAddress::parse(text, address, problem)) return fmt::format("\"{}\": {}", text, problem);
    if (address.scheme != "tcp")
      return fmt::format("\"{}\": the status listener speaks plain HTTP (no {}://)", text, address.scheme);
  }
  return "";
}

std::string check_network_list(const Value& value) { return check_networks(std::get<std::vector<std::string>>(value)); }

}  // namespace

void add_observability_options(Options& options) {
  options.add(Option::list("status.listen", {},
                           "addresses of the status listener (HTTP: /metrics, /status, /status.json), like listen: "
                           "127.0.0.1:9100, [::1]:9100, unix:/path (default: none, no status listener)")
                  .with_check(check_status_listen));
  options.add(Option::list("status.cidr_allow", {},
                           "networks allowed to ask the status listener besides loopback and unix-socket peers")
                  .with_check(check_network_list));
  options.add(Option::duration("stall_warning", 0.5, 0, 86400,
                               "log a callback that holds an event loop longer than this, while it blocks and when "
                               "it returns, in processes serving many clients at once (0: off)"));
  options.add(Option::duration("worker_timeout", 0, 0, 1e9,
                               "kill and replace a supervised process whose event loop has not turned for this long, "
                               "logging what it was doing and its stack (0: off)"));
  options.add(Option::integer("prefork.max_requests_jitter", 0, 0, 1e12,
                              "add a random 0..N to each child's max_requests, so that children do not all "
                              "recycle at once"));
  options.add(Option::integer("multiplex.max_requests", 0, 0, 1e12,
                              "with workers: sessions a worker serves before it is replaced gracefully (the new one "
                              "accepts first, the old one drains; 0: never)"));
}

ObservabilitySettings observability_settings(const Config& config) {
  ObservabilitySettings settings;
  settings.status_cidr_allow = config.list("status.cidr_allow");
  settings.stall_warning = config.duration("stall_warning");
  settings.worker_timeout = config.duration("worker_timeout");
  const Duration zero = Duration::zero();
  if (settings.worker_timeout > zero && settings.stall_warning > zero && settings.worker_timeout < settings.stall_warning)
    throw ConfigError(fmt::format("worker_timeout ({}) is shorter than stall_warning ({}): a stuck process would be "
                                  "killed before its stall is even reported",
                                  config.describe("worker_timeout"), config.describe("stall_warning")));
  settings.max_requests_jitter = config.integer("prefork.max_requests_jitter");
  settings.multiplex_max_requests = config.integer("multiplex.max_requests");
  return settings;
}

}  // namespace netserver
