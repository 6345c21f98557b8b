// A personality written outside netserver's tree, against the installed engine interface only
// (netserver/engine.hpp): "trio" keeps `trio.children` event-loop processes of `trio.sessions`
// clients each. The protocol is an echo that names the serving process.

#include <unistd.h>

#include <netserver/netserver.hpp>

namespace {

class Trio : public netserver::Personality {
 public:
  Trio(std::size_t children, std::size_t sessions) : children_(children), sessions_(sessions) {}
  void loop(netserver::Server& server) override {
    netserver::engine::serve_in_children(server, children_,
                                         {.max_sessions = sessions_, .refuse_when_full = true,
                                          .on_stop = netserver::engine::StopMode::close});
  }

 private:
  std::size_t children_;
  std::size_t sessions_;
};

netserver::PersonalityInfo trio() {
  return {
      .name = "trio",
      .summary = "a few event-loop children, each serving a few clients",
      .add_options =
          [](netserver::Options& options) {
            options.add(netserver::Option::integer("trio.children", 3, 1, 64, "event-loop processes"));
            options.add(netserver::Option::integer("trio.sessions", 2, 1, 1000, "clients per process"));
          },
      .create = [](const netserver::Config& config) -> std::unique_ptr<netserver::Personality> {
        return std::make_unique<Trio>(static_cast<std::size_t>(config.integer("trio.children")),
                                      static_cast<std::size_t>(config.integer("trio.sessions")));
      },
  };
}

class Echo : public netserver::LineHandler {
 public:
  void on_connect(netserver::Session& session) override {
    session.send_line(fmt::format("trio echo, pid {}", ::getpid()));
  }
  void on_line(netserver::Session& session, std::string_view line) override { session.send_line(line); }
};

}  // namespace

int main(int argc, char** argv) {
  netserver::Server server("trio", std::make_shared<Echo>());
  server.add_personality(trio());
  server.set_default("personality", std::string("trio"));
  return server.main(argc, argv);
}
