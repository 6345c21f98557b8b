#include "multiplex.hpp"

#include "netserver/config.hpp"
#include "worker.hpp"

namespace netserver {

PersonalityInfo Multiplex::info() {
  return {
      .name = "multiplex",
      .summary = "one process, one event loop, every client at once; callbacks must not block",
      .add_options =
          [](Options& options) {
            options.add(Option::integer("max_connections", 10000, 1, 1 << 24,
                                        "multiplex: clients served at once; past it a client gets "
                                        "\"error: server busy\""));
          },
      .create = [](const Config& config) -> std::unique_ptr<Personality> {
        return std::make_unique<Multiplex>(static_cast<std::size_t>(config.integer("max_connections")));
      },
  };
}

// TERM closes every session once its queued output is delivered: Multiplex sessions (a chat)
// do not end on their own.
void Multiplex::loop(Server& server) {
  run_worker(server, WorkerOptions{.max_sessions = max_connections_, .refuse_when_full = true}, StopMode::close);
}

}  // namespace netserver
