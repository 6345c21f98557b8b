#include "single.hpp"

#include "worker.hpp"

namespace netserver {

PersonalityInfo Single::info() {
  return {
      .name = "single",
      .summary = "one process, one client at a time; the others wait in the backlog",
      .add_options = [](Options&) {},
      .create = [](const Config&) -> std::unique_ptr<Personality> { return std::make_unique<Single>(); },
  };
}

void Single::loop(Server& server) { run_worker(server, WorkerOptions{.max_sessions = 1}, StopMode::drain); }

}  // namespace netserver
