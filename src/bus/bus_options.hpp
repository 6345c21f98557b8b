#pragma once
// The `bus` configuration keys and the settings they make.

#include <optional>
#include <string>

#include "bus/redis_bus.hpp"

namespace netserver {
class Config;
class Options;
}  // namespace netserver

namespace netserver::bus {

/// Adds `bus` and the `bus_*` keys to the schema; `program` is the default channel prefix.
void add_bus_options(Options& options, const std::string& program);
/// The bus settings of a configuration; nothing when `bus` is empty (rooms stay in-process).
std::optional<BusSettings> bus_settings(const Config& config);

}  // namespace netserver::bus

namespace netserver::bus {
/// Throws ConfigError when the bus keys contradict each other (a heartbeat not shorter than the
/// presence TTL would let live members vanish).
void check_bus_combinations(const Config& config);
}  // namespace netserver::bus
