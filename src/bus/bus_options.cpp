#include "bus/bus_options.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "netserver/config.hpp"
#include "netserver/errors.hpp"
#include "netserver/options.hpp"

namespace netserver::bus {

namespace {

std::string check_address(const Value& value) {
  const std::string& text = std::get<std::string>(value);
  if (text.empty()) return "";
  RedisAddress ignored;
  return parse_redis_address(text, ignored);
}

std::string check_prefix(const Value& value) {
  const std::string& text = std::get<std::string>(value);
  if (text.empty()) return "the channel prefix must not be empty";
  if (text.find_first_of(" \t\r\n*?[]") != std::string::npos) return "the channel prefix must not contain blanks or * ? [ ]";
  return "";
}

constexpr std::size_t shortest_secret = 16;

std::string check_secret(const Value& value) {
  const std::string& text = std::get<std::string>(value);
  if (!text.empty() && text.size() < shortest_secret)
    return fmt::format("a bus secret needs at least {} bytes (e.g. openssl rand -hex 32)", shortest_secret);
  return "";
}

// The secret in `path`: the whole file but a final line end. Empty with `problem` set when it
// cannot be read or is too short (the secret itself is never quoted).
std::string read_secret_file(const std::string& path, std::string& problem) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    problem = fmt::format("cannot read the bus secret file {}", path);
    return "";
  }
  std::stringstream text;
  text << in.rdbuf();
  std::string secret = text.str();
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  problem = check_secret(Value(secret));
  if (secret.empty()) problem = fmt::format("the bus secret file {} is empty", path);
  if (!problem.empty()) problem = fmt::format("{} ({})", problem, path);
  return problem.empty() ? secret : "";
}

std::string check_secret_file(const Value& value) {
  const std::string& path = std::get<std::string>(value);
  if (path.empty()) return "";
  std::string problem;
  read_secret_file(path, problem);
  return problem;
}

}  // namespace

void add_bus_options(Options& options, const std::string& program) {
  options.add(Option::text("bus", "",
                           "rooms across processes and machines through Redis pub/sub: redis://[:PASSWORD@]HOST:PORT, "
                           "redis+unix:///path or redis-sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME "
                           "(the master found through its Sentinels; empty: rooms stay in this process)")
                  .with_check(check_address));
  options.add(Option::text("bus_sentinel_password", "",
                           "password of the Sentinels of a redis-sentinel:// bus (their requirepass; the master's is in "
                           "the address; empty: no AUTH)")
                  .as_secret());
  options.add(Option::text("bus_prefix", program, "prefix of the bus's Redis channels and keys: programs with the same prefix on one Redis "
                           "share their rooms")
                  .with_check(check_prefix));
  options.add(Option::duration("bus_connect_timeout", 2, 0.05, 600, "seconds to connect to Redis, AUTH and PING"));
  options.add(Option::duration("bus_probe_interval", 5, 0.05, 3600,
                               "seconds between liveness probes; a probe not back by the next one reconnects"));
  options.add(Option::duration("bus_backoff_max", 10, 0.05, 3600, "longest wait between reconnect attempts"));
  options.add(Option::duration("bus_presence_ttl", 60, 0.2, 86400,
                               "seconds a member stays listed without a heartbeat (a killed process's members vanish then)"));
  options.add(Option::duration("bus_heartbeat", 25, 0.05, 86400, "seconds between presence refreshes (below bus_presence_ttl)"));
  options.add(Option::integer("bus_history", 0, 0, 10000000,
                              "messages kept per room in a Redis Stream (XADD MAXLEN ~): after a reconnect each process "
                              "delivers what it missed, in order, exactly once; 0: pub/sub only, at most once"));
  options.add(Option::text("bus_secret", "",
                           "shared key: every message and presence entry on the bus carries an HMAC-SHA256 with it, and "
                           "what lacks a valid one is dropped (at least 16 bytes; empty: none)")
                  .with_check(check_secret)
                  .as_secret());
  options.add(Option::text("bus_secret_file", "", "file holding bus_secret (its final line end is not part of it)")
                  .with_check(check_secret_file));
}

std::optional<BusSettings> bus_settings(const Config& config) {
  const std::string& text = config.string("bus");
  if (text.empty()) return std::nullopt;
  BusSettings settings;
  if (!parse_redis_address(text, settings.address).empty()) return std::nullopt;  // validated when loaded
  settings.sentinel_password = config.string("bus_sentinel_password");
  settings.prefix = config.string("bus_prefix");
  settings.connect_timeout = config.seconds("bus_connect_timeout");
  settings.probe_interval = config.seconds("bus_probe_interval");
  settings.backoff_max = config.seconds("bus_backoff_max");
  settings.backoff_initial = std::min(settings.backoff_initial, settings.backoff_max);
  settings.presence_ttl = config.seconds("bus_presence_ttl");
  settings.heartbeat = config.seconds("bus_heartbeat");
  settings.secret = config.string("bus_secret");
  settings.history = config.integer("bus_history");
  if (const std::string& file = config.string("bus_secret_file"); !file.empty()) {
    std::string problem;
    settings.secret = read_secret_file(file, problem);
    if (!problem.empty()) throw ConfigError(fmt::format("{}: {}", config.describe("bus_secret_file"), problem));
  }
  return settings;
}

}  // namespace netserver::bus

namespace netserver::bus {

void check_bus_combinations(const Config& config) {
  if (config.string("bus").empty()) return;
  if (!config.string("bus_sentinel_password").empty() && !config.string("bus").starts_with("redis-sentinel://"))
    throw ConfigError(fmt::format("{}: only a redis-sentinel:// bus has Sentinels (the bus is {})",
                                  config.describe("bus_sentinel_password"), config.describe("bus")));
  if (!config.string("bus_secret").empty() && !config.string("bus_secret_file").empty())
    throw ConfigError(fmt::format("{} and {}: give the bus secret once", config.describe("bus_secret"),
                                  config.describe("bus_secret_file")));
  if (config.seconds("bus_heartbeat") >= config.seconds("bus_presence_ttl"))
    throw ConfigError(fmt::format("{} must be shorter than {}: members would vanish between heartbeats",
                                  config.describe("bus_heartbeat"), config.describe("bus_presence_ttl")));
}

}  // namespace netserver::bus
