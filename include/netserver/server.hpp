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

class ServerRuntime;  // the engine's side (src/server_runtime.hpp)

/// A server program: runs the pipeline (the PROCESS FLOW) around its protocol handlers, under the
/// configured personality. Derive from it only to override hooks.
class Server {
 public:
  /// `name` names the program in logs and the banner; `handler` is the protocol served on
  /// `listen` (or host:port).
  Server(std::string name, std::shared_ptr<Handler> handler);
  virtual ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  /// Runs the server and turns setup errors into a message and an exit status (0 after a clean
  /// stop, 2 for configuration errors, 1 for other failures). What main() should return.
  int main(int argc, char** argv);

  /// The run pipeline, one step per line (the PROCESS FLOW). Throws Error on setup failures and
  /// Exit for --help, --version and --check-config.
  void run(int argc, char** argv);

  // --- before run(): the application's own configuration and protocols ----------------------

  /// The schema: add application keys, or change defaults with set_default.
  Options& options();
  /// Changes a key's default (an application's own defaults; the file and command line still win).
  void set_default(std::string_view key, Value value) { options().set_default(key, std::move(value)); }
  /// Registers another personality (its block joins the schema).
  void add_personality(PersonalityInfo info);
  /// Serves `handler` on the addresses of the list key `listen_key` as well (an application key
  /// added with options().add(Option::list(...)), written like `listen`), beside the main handler
  /// on `listen`: a second protocol on its own ports. Every address is one listener: the same
  /// address in two services is a configuration error.
  void add_service(std::string listen_key, std::shared_ptr<Handler> handler);

  // --- while running -----------------------------------------------------------------------

  /// The program name given to the constructor.
  const std::string& name() const;
  /// The configured personality's name.
  const std::string& personality_name() const;
  /// The effective configuration (valid from the configure step on).
  const Config& config() const;
  /// The main protocol handler.
  Handler& handler() const;
  /// Replaces the main protocol handler, e.g. from post_configure_hook to pick one by an
  /// application key. Only before the loop starts: running sessions must not see their handler change.
  void set_handler(std::shared_ptr<Handler> handler);
  /// The listening sockets (valid from the bind step on).
  const std::vector<Listener>& listeners() const;
  /// Session bounds from the configuration.
  const SessionLimits& session_limits() const;
  /// The built-in access rules (allow, deny, cidr_allow, cidr_deny; Net::Server's order).
  bool allow_deny(const Session& session) const;
  /// The engine's side of this server, for personalities (netserver/engine.hpp).
  ServerRuntime& runtime() { return *runtime_; }

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
  /// In the parent, right before a child process is forked (PreFork, Fork, Multiplex workers).
  virtual void pre_fork_hook() {}
  /// In every new child process, before it serves anyone; a child whose hook throws exits with
  /// status 3 (and the parent stops spawning).
  virtual void child_init_hook() {}
  /// In every child process whose child_init_hook returned, right before it exits.
  virtual void child_finish_hook() {}

 private:
  std::unique_ptr<ServerRuntime> runtime_;
};

}  // namespace netserver
