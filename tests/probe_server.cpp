// probe_server: a test-only server whose line commands reach every corner of the Handler and
// Session API (timers, exceptions, blocking, floods, crashes), and whose hooks log their names
// so tests can check the PROCESS FLOW.

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include <netserver/netserver.hpp>

#include "probe_command.hpp"

using netserver::Session;
using probe::number;

namespace {

class ProbeHandler : public netserver::LineHandler {
 public:
  void on_connect(Session& session) override {
    session.send_line(fmt::format("probe ready (personality {}, pid {})", session.server().personality_name(), ::getpid()));
  }

  void on_line(Session& session, std::string_view line) override {
    const auto [command, argument] = probe::parse(line);
    if (command == "echo") return session.send_line(argument);
    if (command == "timeout") return session.set_timeout(netserver::from_seconds(number(argument)));
    if (command == "throw") throw std::runtime_error("probe exception");
    if (command == "sleep") return std::this_thread::sleep_for(std::chrono::duration<double>(number(argument)));
    if (command == "flood") return flood(session, static_cast<std::size_t>(number(argument)));
    if (command == "pid") return session.send_line(std::to_string(::getpid()));
    if (command == "sessions") return session.send_line(std::to_string(session.registry().size()));
    if (command == "crash") std::abort();
    if (command == "exit") std::_Exit(static_cast<int>(number(argument)));
    if (command == "close") return session.close();
    if (command == "tls") return describe_tls(session);
    if (command == "peer") return session.send_line(session.peer());
    if (command == "proxy") return describe_proxy(session);
    session.send_line("unknown command");
  }

  void on_timeout(Session& session) override { session.send_line("timeout fired"); }

  // What the handshake negotiated, as the handler sees it.
  static void describe_tls(Session& session) {
    const netserver::TlsInfo* tls = session.tls();
    if (!tls) return session.send_line("tls none");
    session.send_line(fmt::format("tls {} {} sni={} alpn={} subject={} verified={} resumed={}", tls->version, tls->cipher,
                                  tls->server_name, tls->alpn, tls->peer_subject, tls->peer_verified ? "yes" : "no",
                                  tls->resumed ? "yes" : "no"));
  }
  // What the load balancer's PROXY header said, as the handler sees it.
  static void describe_proxy(Session& session) {
    const netserver::ProxyInfo* proxy = session.proxy();
    if (!proxy) return session.send_line("proxy none");
    session.send_line(fmt::format("proxy v{} peer={} balancer={} destination={} local={} authority={} ssl={} verified={} "
                                  "cn={}",
                                  proxy->version, session.peer(), proxy->balancer, proxy->destination,
                                  proxy->local ? "yes" : "no", proxy->authority, proxy->ssl ? "yes" : "no",
                                  proxy->ssl_verified ? "yes" : "no", proxy->ssl_common_name));
  }
  void on_eof(Session& session) override { session.send_line("eof seen"); }

 private:
  // Queues `bytes` of output in 1000-byte lines (the last one shorter).
  static void flood(Session& session, std::size_t bytes) {
    const std::string line(998, 'f');
    for (; bytes >= 1000 && session.is_open(); bytes -= 1000) session.send_line(line);
    if (bytes > 0) session.send(std::string(bytes, 'f'));
  }
};

// A second protocol on the addresses of probe.admin_listen (Server::add_service): it names the
// listener a client came in on.
class AdminHandler : public netserver::LineHandler {
 public:
  void on_connect(Session& session) override { session.send_line("admin on " + session.listener()); }
  void on_line(Session& session, std::string_view line) override { session.send_line("admin heard " + std::string(line)); }
};

class ProbeServer : public netserver::Server {
 public:
  ProbeServer() : Server("probe", std::make_shared<ProbeHandler>()) {
    options().add(netserver::Option::flag("probe.deny", false, "refuse every client in allow_deny_hook"));
    options().add(netserver::Option::text("probe.child_init", "ok", "child_init_hook: ok, throw, or crash")
                      .with_choices({"ok", "throw", "crash"}));
    options().add(netserver::Option::duration("probe.pre_loop_delay", 0, 0, 60,
                                              "pre_loop_hook sleeps this long (after the server announced it is ready)"));
    options().add(netserver::Option::duration("probe.close_delay", 0, 0, 60,
                                              "pre_server_close_hook sleeps this long (the teardown after the loop)"));
    options().add(netserver::Option::list("probe.admin_listen", {}, "addresses of the admin protocol"));
    add_service("probe.admin_listen", std::make_shared<AdminHandler>());
  }
  void configure_hook() override { trace("configure_hook"); }
  void post_configure_hook() override { trace("post_configure_hook"); }
  void post_bind_hook() override { trace("post_bind_hook"); }
  void pre_loop_hook() override {
    trace("pre_loop_hook");
    std::this_thread::sleep_for(std::chrono::duration<double>(config().seconds("probe.pre_loop_delay")));
  }
  void pre_server_close_hook() override {
    trace("pre_server_close_hook");
    std::this_thread::sleep_for(std::chrono::duration<double>(config().seconds("probe.close_delay")));
  }
  void post_accept_hook(Session& session) override { trace("post_accept_hook " + session.peer()); }
  bool allow_deny_hook(Session& session) override {
    trace("allow_deny_hook " + session.peer());
    return !config().boolean("probe.deny");
  }
  void request_denied_hook(Session& session) override {
    trace("request_denied_hook " + session.peer());
    session.send_line("denied");
  }
  void post_process_request_hook(Session& session) override { trace("post_process_request_hook " + session.peer()); }
  void child_init_hook() override {
    trace("child_init_hook");
    const std::string& mode = config().string("probe.child_init");
    if (mode == "throw") throw std::runtime_error("probe child cannot start");
    if (mode == "crash") std::abort();
  }
  void child_finish_hook() override { trace("child_finish_hook"); }
  void pre_fork_hook() override { trace("pre_fork_hook"); }

 private:
  static void trace(const std::string& what) { netserver::log::notice("hook {}", what); }
};

// PROBE_SIGNAL_MASK=1: prints the signals blocked when main() starts (/proc/self/status's SigBlk)
// to stderr, so that a test can see which signals a program built on netserver holds from the start.
void print_signal_mask() {
  if (!std::getenv("PROBE_SIGNAL_MASK")) return;
  std::FILE* status = std::fopen("/proc/self/status", "r");
  if (!status) return;
  char line[256];
  while (std::fgets(line, sizeof line, status))
    if (std::string_view(line).starts_with("SigBlk:")) std::fputs(line, stderr);
  std::fclose(status);
}

}  // namespace

int main(int argc, char** argv) {
  print_signal_mask();
  ProbeServer server;
  return server.main(argc, argv);
}
