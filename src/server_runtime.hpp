#pragma once
/// ServerRuntime: the engine's side of a Server -- the configuration and its schema, the bound
/// listeners and how each is served (endpoints), the transports by scheme, and the operations
/// state (pid file, identity, restart). The public Server is its facade: it runs the pipeline
/// and holds the hooks; personalities reach this through Server::runtime().

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bus/redis_bus.hpp"
#include "address_limits.hpp"
#include "daemon.hpp"
#include "edge_options.hpp"
#include "endpoint.hpp"
#include "netserver/access.hpp"
#include "netserver/config.hpp"
#include "netserver/handler.hpp"
#include "netserver/listener.hpp"
#include "netserver/options.hpp"
#include "netserver/personality.hpp"
#include "netserver/session.hpp"
#include "observatory.hpp"
#include "restart.hpp"

namespace netserver {

class Server;

/// A protocol and the list key naming where it is served ("listen" for the main one).
struct Service {
  std::string listen_key;
  std::shared_ptr<Handler> handler;
  /// The toolkit's status listener (`status.listen`): its endpoints are served by the
  /// Observatory on a thread of its own, never by the personality's engines.
  bool toolkit = false;
};

/// A configured address and the service it belongs to.
struct Binding {
  ListenAddress address;
  std::size_t service = 0;
};

/// How long stops and restarts may take, read once from the configuration.
struct StopTimes {
  Duration graceful;         ///< graceful_timeout: TERM/INT's bound on the sessions' end
  Duration restart_drain;    ///< restart_drain_timeout (forever for 0): HUP's bound on the old sessions
  Duration restart_timeout;  ///< restart_timeout: how long a new image may take to report ready
};

class ServerRuntime {
 public:
  ServerRuntime(Server& server, std::string name);
  ~ServerRuntime();

  // --- the pipeline's steps (Server::run calls them in order) -----------------------------------
  void configure(int argc, char** argv);
  void post_configure();
  void pre_bind();
  void bind();
  void post_bind();
  void loop();
  void server_close();
  /// What main() reports on a failure, and the clean-up it does.
  void failed(const std::string& message);

  // --- what the engine reads ---------------------------------------------------------------------
  Server& server() { return server_; }
  const Config& config() const;
  /// The bound listeners with their transports and handlers (from the bind step on).
  const std::vector<Endpoint>& endpoints() const { return endpoints_; }
  /// The status listener's endpoints (`status.listen`); served by the observatory.
  const std::vector<Endpoint>& status_endpoints() const { return status_endpoints_; }
  /// Metrics, the status listener, the stall watcher's and the watchdog's settings.
  Observatory& observatory() { return *observatory_; }
  const std::vector<Listener>& listeners() const { return listeners_; }
  const SessionLimits& limits() const { return limits_; }
  const StopTimes& stop_times() const { return stop_times_; }
  /// The bus (`bus:`), when one is configured.
  const std::optional<bus::BusSettings>& bus() const { return bus_; }
  bool allows(const std::string& peer) const;
  /// The edge keys: PROXY protocol listeners, trusted balancers, per-address limits.
  const EdgeSettings& edge() const { return edge_; }
  /// The per-address limits shared by every process of the server; null when none is set.
  AddressLimits* address_limits() const { return address_limits_.get(); }

  // --- restart without dropping the port, log files ---------------------------------------------
  /// SIGHUP, first half: loads the configuration again (file and command line, as started) and
  /// binds the addresses it adds. False, with the reason logged, when the running server should
  /// carry on instead (the configuration does not load, an address cannot be bound, chroot).
  bool prepare_restart();
  /// SIGHUP, second half: starts a fresh image of the program in a process of its own, beside
  /// this one, handing it the listening sockets, the descriptors kept across restarts and
  /// `descriptors`, with `environment` (succession.hpp). Returns its pid, or -1 (logged).
  pid_t start_new_image(const std::vector<int>& descriptors,
                        const std::vector<std::pair<std::string, std::string>>& environment);
  /// Gives up a restart prepared by prepare_restart() (the addresses it bound are closed).
  void cancel_restart();
  /// The new image serves: this process closes its descriptors of the listeners and forgets
  /// them without removing their unix socket files (they are the new image's now).
  void release_listeners();
  /// True once this image handed over to a new one.
  bool handed_over() const { return handed_over_; }
  /// TERM/INT/QUIT: new clients are turned away at once (the listeners are shut down and closed,
  /// unix socket files removed) while the sessions open finish. systemd's sockets are only closed.
  void stop_listening();
  /// In a process that must never accept again (a child whose parent is gone, the copy keeping
  /// a restart's sessions): closes its descriptors of the listeners; the sockets and their files
  /// belong to whoever still serves them. The process must end with _exit().
  void close_listener_descriptors();
  /// SIGUSR1: reopens the log file (after logrotate moved it); failures are logged.
  void reopen_log();

  // --- state the public Server forwards ---------------------------------------------------------
  std::string name;
  Options options;
  Personalities personalities;
  std::vector<Service> services;  ///< [0] is the main handler, on `listen` / host:port
  std::string program;
  std::optional<Config> config_;
  std::unique_ptr<Personality> personality;

 private:
  void add_core_options();
  std::string help_text() const;
  void check_combinations(const Config& config) const;
  void check_restartable(const Config& fresh) const;
  void check_startable(const Config& config) const;
  std::vector<Binding> bindings(const Config& config) const;
  std::vector<ListenAddress> addresses(const Config& config) const;
  void make_endpoints();
  std::vector<std::string> metrics_listeners() const;
  void defer_accept(const Endpoint& endpoint) const;
  std::vector<std::string> owned_paths() const;

  Server& server_;
  std::vector<Binding> bindings_;
  std::vector<Listener> listeners_;
  std::vector<Endpoint> endpoints_;
  std::vector<Endpoint> status_endpoints_;
  std::unique_ptr<Observatory> observatory_;
  TransportSchemes schemes_;
  SessionLimits limits_;
  StopTimes stop_times_{};
  std::optional<bus::BusSettings> bus_;
  AccessRules access_;
  EdgeSettings edge_;
  std::unique_ptr<AddressLimits> address_limits_;  // mapped before any fork
  std::unique_ptr<PidFile> pid_file_;
  Identity identity_;
  std::unique_ptr<Relauncher> relauncher_;
  Inheritance inherited_;
  bool detached_ = false;  // in the background (now or since a previous image)
  bool handed_over_ = false;
  std::vector<Listener> added_for_restart_;
};

}  // namespace netserver
