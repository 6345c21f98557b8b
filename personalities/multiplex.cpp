#include "multiplex.hpp"

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "netserver/config.hpp"
#include "netserver/engine.hpp"

namespace netserver {

namespace {

std::string check_workers(const Value& value) {
  const std::string& text = std::get<std::string>(value);
  if (text == "auto") return "";
  char* end = nullptr;
  const long count = std::strtol(text.c_str(), &end, 10);
  if (!text.empty() && *end == '\0' && count >= 1 && count <= 1024) return "";
  return "expected auto or a number of worker processes from 1 to 1024, got \"" + text + "\"";
}

std::size_t worker_count(const Config& config) {
  const std::string text = config.string("multiplex.workers");
  if (text != "auto") return static_cast<std::size_t>(std::stol(text));
  const long cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  return cores > 0 ? static_cast<std::size_t>(cores) : 1;
}

}  // namespace

PersonalityInfo Multiplex::info() {
  return {
      .name = "multiplex",
      .summary = "event loops serving every client at once (one process, or N workers); callbacks must not block",
      .add_options =
          [](Options& options) {
            options.add(Option::integer("max_connections", 10000, 1, 1 << 24,
                                        "multiplex: clients served at once, per worker; past it a client gets "
                                        "\"error: server busy\""));
            options.add(Option::text("multiplex.workers", "1",
                                     "event-loop processes: 1 serves in this process; N > 1 (or auto: one per "
                                     "core) forks N workers on the shared listeners")
                            .with_check(check_workers));
          },
      .create = [](const Config& config) -> std::unique_ptr<Personality> {
        return std::make_unique<Multiplex>(
            Settings{static_cast<std::size_t>(config.integer("max_connections")), worker_count(config)});
      },
  };
}

// TERM closes every session once its queued output is delivered: Multiplex sessions (a chat)
// do not end on their own.
void Multiplex::loop(Server& server) {
  const engine::ServeOptions options{
      .max_sessions = settings_.max_connections, .refuse_when_full = true, .on_stop = engine::StopMode::close};
  if (settings_.workers <= 1) return engine::serve_here(server, options);
  engine::serve_in_children(server, settings_.workers, options);
}

}  // namespace netserver
