#pragma once
/// Server: the run pipeline and its hooks. An application derives from it only to override
/// hooks; the protocol lives in a Handler, the process model in the configured personality.
///
///   int main(int argc, char** argv) {
///     netserver::Server server("echo", std::make_shared<EchoHandler>());
///     return server.main(argc, argv);
///   }

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "netserver/access.hpp"
#include "netserver/config.hpp"
#include "netserver/handler.hpp"
#include "netserver/listener.hpp"
#include "netserver/options.hpp"
#include "netserver/personality.hpp"
#include "netserver/session.hpp"

namespace netserver {

/// netserver's version, "0.2.0" (NETSERVER_VERSION_STRING from netserver/version.hpp).
std::string_view version();

class TlsContext;  // src/tls.hpp

/// A server program: runs the pipeline (README's PROCESS FLOW) around a Handler, under the
/// configured personality. Derive from it only to override hooks.
class Server {
 public:
  /// `name` names the program in logs and the banner; `handler` is the protocol.
  Server(std::string name, std::shared_ptr<Handler> handler);
  virtual ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Runs the server and turns setup errors into a message and an exit status (0 after a clean
  /// stop, 2 for configuration errors, 1 for other failures). What main() should return.
  int main(int argc, char** argv);

  /// The run pipeline, one step per line (the README's PROCESS FLOW). Throws Error on setup
  /// failures and Exit for --help, --version and --check-config.
  void run(int argc, char** argv);

  // --- before run(): the application's own configuration ---------------------------------

  /// The schema: add application keys, or change defaults with set_default.
  Options& options() { return options_; }
  /// Changes a key's default (an application's own defaults; the file and command line still win).
  void set_default(std::string_view key, Value value) { options_.set_default(key, std::move(value)); }
  /// Registers another personality (its block joins the schema).
  void add_personality(PersonalityInfo info);

  // --- while running -----------------------------------------------------------------------

  /// The program name given to the constructor.
  const std::string& name() const { return name_; }
  /// The configured personality's name.
  const std::string& personality_name() const;
  /// The effective configuration (valid from the configure step on).
  const Config& config() const;
  /// The protocol handler.
  Handler& handler() const { return *handler_; }
  /// Replaces the protocol handler, e.g. from post_configure_hook to pick one by an application
  /// key. Only before the loop starts: running sessions must not see their handler change.
  void set_handler(std::shared_ptr<Handler> handler) { handler_ = std::move(handler); }
  /// The listening sockets (valid from the bind step on).
  const std::vector<Listener>& listeners() const { return listeners_; }
  /// Session bounds from the configuration.
  const SessionLimits& session_limits() const { return limits_; }
  /// The built-in access rules (allow, deny, cidr_allow, cidr_deny; Net::Server's order).
  bool allow_deny(const Session& session) const;

  // --- for personalities: restart without dropping the port, log files ---------------------

  /// SIGHUP, first half: loads the configuration again (file and command line, as started) and
  /// binds the addresses it adds. False, with the reason logged, when the running server should
  /// carry on instead (the configuration does not load, an address cannot be bound, chroot).
  bool prepare_restart();
  /// SIGHUP, second half: replaces this process with a fresh image of the program, handing over
  /// the listening sockets; `children` are processes the new image must wait for. Returns only
  /// if that failed (logged); the running server then carries on.
  void restart(const std::vector<pid_t>& children);
  /// Gives up a restart prepared by prepare_restart() (the addresses it bound are closed).
  void cancel_restart();
  /// Processes of the previous image (after a restart) that this one must wait for.
  const std::vector<pid_t>& inherited_children() const;
  /// TERM/INT/QUIT: new clients are turned away at once (the listeners are shut down and closed,
  /// unix socket files removed) while the sessions open finish. systemd's sockets are only closed.
  void stop_listening();
  /// In a copy forked to finish the sessions of a restart: closes the copy's descriptors of the
  /// listeners, which belong to the new image (files stay). The copy must end with _exit().
  void close_listeners_in_copy();
  /// SIGUSR1: reopens the log file (after logrotate moved it); failures are logged.
  void reopen_log();

  // --- hooks: empty by default; override what you need, never call the base -------------------

  /// Before the configuration is read.
  virtual void configure_hook() {}
  /// After the configuration is read and logging is set up.
  virtual void post_configure_hook() {}
  /// After the listening sockets are bound.
  virtual void post_bind_hook() {}
  /// Right before the personality's loop starts.
  virtual void pre_loop_hook() {}
  /// After the loop ended, before the listeners are closed.
  virtual void pre_server_close_hook() {}
  /// A client was accepted (before access control).
  virtual void post_accept_hook(Session&) {}
  /// Extra access control after the allow/deny rules; return false to refuse the client.
  virtual bool allow_deny_hook(Session&) { return true; }
  /// A client was refused; it is closed right after this hook.
  virtual void request_denied_hook(Session&) {}
  /// A client's session ended (also for refused clients).
  virtual void post_process_request_hook(Session&) {}
  /// PreFork: in the parent, right before a child is forked.
  virtual void pre_fork_hook() {}
  /// PreFork: in a new child, before it serves anyone.
  virtual void child_init_hook() {}
  /// PreFork: in a child, right before it exits.
  virtual void child_finish_hook() {}

 private:
  // The pipeline steps, in order.
  void configure(int argc, char** argv);
  void post_configure();
  void pre_bind();
  void bind();
  void post_bind();
  void loop();
  void server_close();

  void add_core_options();
  std::string help_text() const;
  void check_combinations(const Config& config) const;
  void check_restartable(const Config& fresh) const;
  std::vector<ListenAddress> listen_addresses(const Config& config) const;
  std::shared_ptr<TlsContext> load_tls(const Config& config) const;
  std::vector<std::string> owned_paths() const;

  std::string name_;
  std::shared_ptr<Handler> handler_;
  Options options_;
  Personalities personalities_;
  std::optional<Config> config_;
  std::unique_ptr<Personality> personality_;
  std::vector<ListenAddress> addresses_;
  std::vector<Listener> listeners_;
  SessionLimits limits_;
  AccessRules access_;
  std::string program_;
  struct Operations;                     // pid file, identity, restart state (src/server.cpp)
  std::unique_ptr<Operations> ops_;
};

}  // namespace netserver
