#include "single.hpp"

#include "netserver/engine.hpp"

namespace netserver {

PersonalityInfo Single::info() {
  return {
      .name = "single",
      .summary = "one process, one client at a time; the others wait in the backlog",
      .add_options = [](Options&) {},
      .create = [](const Config&) -> std::unique_ptr<Personality> { return std::make_unique<Single>(); },
  };
}

void Single::loop(Server& server) {
  engine::serve_here(server, {.max_sessions = 1, .refuse_when_full = false, .on_stop = engine::StopMode::drain});
}

}  // namespace netserver
