#include "netserver/server.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "bus/bus_options.hpp"
#include "edge_options.hpp"
#include "metrics_store.hpp"
#include "observability_options.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/version.hpp"
#include "server_runtime.hpp"
#include "signals.hpp"
#include "succession.hpp"
#include "systemd.hpp"
#include "tls.hpp"

namespace netserver {

std::string_view version() { return NETSERVER_VERSION_STRING; }

namespace {

// A program containing a Server holds HUP, USR1, TTIN, TTOU and CHLD from the first instruction
// of its own (the earliest constructor, before main), not only from run(): static initialisation
// and main's own set-up took a few milliseconds in which a reload sent right after start killed
// the process. What remains is the dynamic loader's time after exec, before any code of ours runs.
// The mask is inherited by what the program execs before its loop; run() unblocks each signal
// once it has a handler.
[[gnu::constructor(101)]] void hold_signals_from_start() { hold_signals_until_handled(); }

std::string check_listen(const Value& value) {
  for (const std::string& text : std::get<std::vector<std::string>>(value)) {
    ListenAddress address;
    std::string problem;
    if (!ListenAddress::parse(text, address, problem)) return fmt::format("\"{}\": {}", text, problem);
  }
  return "";
}

std::string check_host(const Value& value) {
  ListenAddress address;
  std::string problem;
  const std::string& host = std::get<std::string>(value);
  const std::string text = host.find(':') != std::string::npos ? "[" + host + "]:0" : host + ":0";
  return ListenAddress::parse(text, address, problem) ? "" : problem;
}

std::string check_mode(const Value& value) {
  const std::string& text = std::get<std::string>(value);
  if (text.empty()) return "";
  const bool octal = text.size() <= 4 && text.find_first_not_of("01234567") == std::string::npos;
  return octal ? "" : fmt::format("expected an octal file mode like 0660, got \"{}\"", text);
}

std::string check_regex_list(const Value& value) { return check_regexes(std::get<std::vector<std::string>>(value)); }
std::string check_network_list(const Value& value) { return check_networks(std::get<std::vector<std::string>>(value)); }

// More descriptors than the usual soft limit of 1024 are needed for thousands of clients.
void raise_descriptor_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) log::warning("{}", system_error_text("setrlimit(RLIMIT_NOFILE)", errno));
  }
}

// Processes that may count connections in the per-address table at once (children, workers and
// the parent); one beyond them is let through uncounted. The table holds one pid per slot.
constexpr std::size_t address_limit_processes = 1024;

bool is_file_target(const std::string& target) { return target != "stderr" && target != "stdout" && target != "syslog"; }

BindOptions bind_options(const Config& config) {
  BindOptions options;
  options.backlog = static_cast<int>(config.integer("backlog"));
  if (!config.string("unix_mode").empty()) options.unix_mode = std::stoi(config.string("unix_mode"), nullptr, 8);
  return options;
}

// What a socket address is, whatever scheme it is served with: two listen entries with the same
// place cannot both be bound.
std::string place_of(const ListenAddress& address) {
  ListenAddress plain = address;
  plain.scheme = "tcp";
  return plain.text();
}

}  // namespace

// --- Server: the facade --------------------------------------------------------------------------

Server::Server(std::string name, std::shared_ptr<Handler> handler)
    : runtime_(std::make_unique<ServerRuntime>(*this, std::move(name))) {
  runtime_->services.push_back({"listen", std::move(handler)});
}

Server::~Server() = default;

Options& Server::options() { return runtime_->options; }
const std::string& Server::name() const { return runtime_->name; }
const Config& Server::config() const { return runtime_->config(); }
const std::string& Server::personality_name() const { return config().string("personality"); }
Handler& Server::handler() const { return *runtime_->services.front().handler; }
void Server::set_handler(std::shared_ptr<Handler> handler) { runtime_->services.front().handler = std::move(handler); }
const std::vector<Listener>& Server::listeners() const { return runtime_->listeners(); }
const SessionLimits& Server::session_limits() const { return runtime_->limits(); }
bool Server::allow_deny(const Session& session) const { return runtime_->allows(session.peer()); }

void Server::add_personality(PersonalityInfo info) {
  Options& schema = options();
  info.add_options(schema);
  runtime_->personalities.add(std::move(info));
  Option personality = *schema.find("personality");
  personality.choices = runtime_->personalities.names();
  schema.add(std::move(personality));
}

void Server::add_service(std::string listen_key, std::shared_ptr<Handler> handler) {
  const Option* option = options().find(listen_key);
  if (!option || option->type != ValueType::string_list)
    throw std::invalid_argument(fmt::format("add_service: \"{}\" is not a list key of the schema", listen_key));
  runtime_->services.push_back({std::move(listen_key), std::move(handler)});
}

int Server::main(int argc, char** argv) {
  try {
    run(argc, argv);
    return exit_status::ok;
  } catch (const Exit& exit) {
    return exit.status();
  } catch (const ConfigError& error) {
    const std::string& program = runtime_->program.empty() ? runtime_->name : runtime_->program;
    fmt::print(stderr, "{}: {}\n", program, error.what());
    runtime_->failed(fmt::format("{}: {}", program, error.what()));
    return error.status();
  } catch (const Error& error) {
    log::error("{}", error.what());
    const std::string failure = fmt::format("{}: {}", runtime_->program, error.what());
    if (!log::to_stderr()) fmt::print(stderr, "{}\n", failure);
    runtime_->failed(failure);
    return error.status();
  } catch (const std::exception& error) {
    log::error("fatal: {}", error.what());
    const std::string failure = fmt::format("{}: fatal: {}", runtime_->program, error.what());
    if (!log::to_stderr()) fmt::print(stderr, "{}\n", failure);
    runtime_->failed(failure);
    return exit_status::failure;
  }
}

void Server::run(int argc, char** argv) {
  ServerRuntime& runtime = *runtime_;
  hold_signals_until_handled();  // HUP or USR1 during start-up wait for the loop's handlers
  configure_hook();
  runtime.configure(argc, argv);  // defaults < --config FILE < --key=value; every check; the personality
  runtime.post_configure();       // logging, TLS, pid file check, user/group, access rules, session limits
  post_configure_hook();
  runtime.pre_bind();             // the addresses to listen on
  runtime.bind();                 // listening sockets: inherited (restart, systemd) or bound now
  post_bind_hook();
  runtime.post_bind();            // background, pid file, chroot, user/group, SIGPIPE; ready
  pre_loop_hook();
  runtime.loop();                 // the personality serves clients until told to stop
  pre_server_close_hook();
  runtime.server_close();         // close the listeners, remove the pid file
}

// --- ServerRuntime: the steps ----------------------------------------------------------------------

ServerRuntime::ServerRuntime(Server& server, std::string program_name)
    : name(std::move(program_name)),
      personalities(Personalities::builtin()),
      server_(server),
      observatory_(std::make_unique<Observatory>(*this)) {
  log::configure(LogLevel::notice, "stderr");
  add_core_options();
  add_edge_options(options);
  for (const PersonalityInfo& info : personalities.all()) info.add_options(options);
}

ServerRuntime::~ServerRuntime() = default;

void ServerRuntime::add_core_options() {
  const double kib = 1024, mib = 1024 * kib, gib = 1024 * mib;
  options.add(Option::text("personality", "single", "process model").with_choices(personalities.names()));
  options.add(Option::text("host", "*", "address to listen on with `port`: * (every address, IPv6 and IPv4), "
                                        "a name or a literal").with_check(check_host));
  options.add(Option::integer("port", 8000, 0, 65535, "TCP port to listen on with `host` (0: any free port)"));
  options.add(Option::list("listen", {}, "addresses to listen on instead of host:port: 127.0.0.1:8000, "
                                         "[::1]:8000, *:8000, unix:/path; tls://ADDRESS for TLS (the tls block)")
                  .with_check(check_listen));
  options.add(Option::integer("backlog", 4096, 1, 1 << 20, "listen(2) queue length"));
  options.add(Option::text("unix_mode", "", "file mode of unix sockets, e.g. 0660 (default: the umask's)")
                  .with_check(check_mode));
  options.add(Option::integer("log_level", 2, 0, 4, "0 error, 1 warning, 2 notice, 3 info (connections), 4 debug"));
  options.add(Option::text("log_file", "stderr",
                           "where the log goes: stderr, stdout, syslog, or a file path (appended to; "
                           "SIGUSR1 reopens it)"));
  options.add(Option::text("syslog_ident", name, "program name in syslog lines"));
  options.add(Option::text("syslog_facility", "daemon", "syslog facility").with_choices(log::syslog_facilities()));
  options.add(Option::text("syslog_socket", "/dev/log", "the syslog daemon's socket"));
  options.add(Option::duration("timeout", 0, 0, 1e9, "close a client after this many seconds without input (0: never)"));
  options.add(Option::size("max_line", 64 * 1024, 1, gib,
                           "longest input line in bytes; a longer one ends the client's session"));
  options.add(Option::size("max_output", 1024 * 1024, kib, 4 * gib,
                           "output queued for one client (what its socket does not take) past which it is "
                           "disconnected; above half of it the client's input is not read"));
  options.add(Option::size("max_output_soft", 0, 0, 4 * gib,
                           "output queued for one client that it may stay above for max_output_soft_seconds "
                           "only (0: no soft limit)"));
  options.add(Option::duration("max_output_soft_seconds", 60, 0, 86400,
                               "how long a client's output queue may stay above max_output_soft"));
  options.add(Option::size("room_output_mark", 0, 0, 4 * gib,
                           "a room message that leaves a member's output queue above this many bytes stops its "
                           "sender's input from being read until the member drains below it or is cut, so a "
                           "flooder is slowed to its readers' pace (0: max_output / 4)"));
  options.add(Option::duration("output_stall_timeout", 5, 0, 86400,
                               "a room member above room_output_mark that takes none of its output for this long is "
                               "disconnected, so that one client that stopped reading holds a room's senders no "
                               "longer (0: never; a member that keeps reading is never cut for being slow)"));
  options.add(Option::integer("max_input_rate", 0, 0, 1e9,
                              "flood control: lines per second read from one client on average; a faster client "
                              "is not read for a while, never disconnected (0: no limit)"));
  options.add(Option::integer("max_input_burst", 100, 1, 1e9,
                              "lines a client may send at once above max_input_rate before it is slowed"));
  options.add(Option::duration("graceful_timeout", 10, 0, 86400,
                               "on TERM/INT, how long sessions may take to finish before they are cut"));
  options.add(Option::duration("restart_drain_timeout", 0, 0, 1e9,
                               "on HUP, how long the sessions open may go on in the previous image before they "
                               "are cut (0: until they end; TERM/INT still ends them within graceful_timeout)"));
  options.add(Option::duration("restart_timeout", 30, 0.1, 3600,
                               "on HUP, how long the new image may take to start and serve; one that does not is "
                               "killed and the running server carries on"));
  options.add(Option::flag("background", false, "detach from the terminal and run as a daemon"));
  options.add(Option::text("pid_file", "", "write the server's pid here; refuse to start if it names a live process"));
  options.add(Option::text("user", "", "switch to this user (name or uid) after binding, when started as root"));
  options.add(Option::text("group", "", "switch to this group (name or gid) after binding (default: the user's)"));
  options.add(Option::text("chroot", "", "chroot to this directory after binding (no restart on HUP then)"));
  options.add(Option::list("allow", {}, "regular expressions: peers whose address matches one are allowed")
                  .with_check(check_regex_list));
  options.add(Option::list("deny", {}, "regular expressions: peers whose address matches one are refused")
                  .with_check(check_regex_list));
  options.add(Option::list("cidr_allow", {}, "networks whose peers are allowed: 10.0.0.0/8, ::1/128")
                  .with_check(check_network_list));
  options.add(Option::list("cidr_deny", {}, "networks whose peers are refused").with_check(check_network_list));
  TlsContext::add_options(options);
  bus::add_bus_options(options, name);
  add_observability_options(options);
}

const Config& ServerRuntime::config() const {
  if (!config_) throw std::logic_error("Server::config() used before the configure step");
  return *config_;
}

void ServerRuntime::failed(const std::string& message) {
  daemon_failed(message);  // a detached server tells the process still waiting on the terminal
  if (pid_file_) pid_file_->remove();
}

void ServerRuntime::configure(int argc, char** argv) {
  program = argc > 0 ? std::filesystem::path(argv[0]).filename().string() : name;
  relauncher_ = std::make_unique<Relauncher>(argc, argv);
  const auto has_status = [](const Service& service) { return service.toolkit; };
  if (std::none_of(services.begin(), services.end(), has_status)) services.push_back({"status.listen", nullptr, true});
  const CommandLine command_line = CommandLine::parse(argc, argv, options);
  if (command_line.help) {
    fmt::print("{}", help_text());
    throw Exit(exit_status::ok);
  }
  if (command_line.version) {
    fmt::print("{} (netserver {})\n", name, version());
    throw Exit(exit_status::ok);
  }
  config_.emplace(Config::load(options, command_line));
  personality = personalities.find(config_->string("personality"))->create(*config_);
  check_combinations(*config_);
  if (command_line.check_config) {
    try {
      check_startable(*config_);
    } catch (const ConfigError&) {
      throw;
    } catch (const Error& error) {  // a configuration the start would refuse is a configuration error here
      throw ConfigError(error.what());
    }
    fmt::print("{}# configuration OK\n", config_->dump());
    throw Exit(exit_status::ok);
  }
}

// What the start checks before it binds, without binding or changing the process: the
// certificates, keys and TLS settings as the start loads them, the user and group, the log
// target (opened as the start opens it) and the pid file's place. --check-config runs exactly this.
void ServerRuntime::check_startable(const Config& config) const {
  TransportSchemes::load(config, addresses(config));
  Identity::resolve(config.string("user"), config.string("group"));
  std::string target = config.string("log_file");
  if (is_file_target(target)) target = std::filesystem::absolute(target).string();
  const std::string log_problem =
      log::probe(target, {config.string("syslog_ident"), config.string("syslog_facility"), config.string("syslog_socket")});
  if (!log_problem.empty()) throw ConfigError(log_problem);
  if (const std::string& pid_file = config.string("pid_file"); !pid_file.empty()) PidFile(pid_file).check_place();
}

// Settings that are fine alone but not together.
void ServerRuntime::check_combinations(const Config& config) const {
  if (config.bytes("max_output_soft") >= config.bytes("max_output"))
    throw ConfigError(fmt::format("max_output_soft must be less than max_output: {} and {}",
                                  config.describe("max_output_soft"), config.describe("max_output")));
  if (config.bytes("room_output_mark") >= config.bytes("max_output"))
    throw ConfigError(fmt::format("room_output_mark must be less than max_output: {} and {}",
                                  config.describe("room_output_mark"), config.describe("max_output")));
  bus::check_bus_combinations(config);
  if (config.boolean("background") && !is_file_target(config.string("log_file")) && config.string("log_file") != "syslog")
    throw ConfigError(fmt::format("background: true needs log_file set to a file or syslog: {} is closed when the "
                                  "server detaches ({})",
                                  config.string("log_file"), config.describe("log_file")));
  std::vector<std::string> listen_texts;  // an address in two places is an error now, not "Address already in use" later
  for (const Binding& binding : bindings(config)) listen_texts.push_back(binding.address.text());
  check_edge_options(config, listen_texts);
  observability_settings(config);  // worker_timeout against stall_warning
}

void ServerRuntime::post_configure() {
  const Config& config = *config_;
  std::string target = config.string("log_file");
  if (is_file_target(target)) target = std::filesystem::absolute(target).string();  // survives chdir
  log::configure(static_cast<LogLevel>(config.integer("log_level")), target,
                 log::SyslogSettings{config.string("syslog_ident"), config.string("syslog_facility"),
                                     config.string("syslog_socket")});
  raise_descriptor_limit();
  limits_.max_line = static_cast<std::size_t>(config.bytes("max_line"));
  limits_.max_output = static_cast<std::size_t>(config.bytes("max_output"));
  limits_.max_output_soft = static_cast<std::size_t>(config.bytes("max_output_soft"));
  limits_.max_output_soft_for = config.duration("max_output_soft_seconds");
  limits_.room_output_mark = static_cast<std::size_t>(config.bytes("room_output_mark"));
  limits_.output_stall_timeout = config.duration("output_stall_timeout");
  limits_.max_input_rate = static_cast<double>(config.integer("max_input_rate"));
  limits_.max_input_burst = static_cast<std::size_t>(config.integer("max_input_burst"));
  limits_.idle_timeout = config.duration("timeout");
  limits_.close_timeout = config.duration("graceful_timeout");
  stop_times_.graceful = config.duration("graceful_timeout");
  stop_times_.restart_drain = config.duration("restart_drain_timeout");
  if (stop_times_.restart_drain == Duration::zero()) stop_times_.restart_drain = forever;
  stop_times_.restart_timeout = config.duration("restart_timeout");
  access_ = AccessRules(config.list("allow"), config.list("deny"), config.list("cidr_allow"), config.list("cidr_deny"));
  if (config.list("allow").empty() && config.list("cidr_allow").empty() && !access_.empty())
    log::warning("only deny rules are set: as in Net::Server, peers that match no allow or cidr_allow rule are "
                 "refused too");
  schemes_ = TransportSchemes::load(config, addresses(config));  // as root, before binding
  edge_ = edge_settings(config, address_limit_processes);
  if (edge_.limits.enabled()) address_limits_ = std::make_unique<AddressLimits>(edge_.limits);  // before any fork
  bus_ = bus::bus_settings(config);
  identity_ = Identity::resolve(config.string("user"), config.string("group"));
  Succession::take_environment();
  inherited_ = Inheritance::take();  // before the pid file: a restart hands over its lock
  MetricsStore::take_handover();     // the previous image's metrics table, kept across its exec
  observatory_->configure(config);
  // A new image started by a HUP leaves the pid file to the anchor, which keeps its pid.
  if (!config.string("pid_file").empty() && Succession::is_anchor()) {
    pid_file_ = std::make_unique<PidFile>(config.string("pid_file"));
    pid_file_->check();
    pid_file_->lock();
  }
  detached_ = inherited_.detached;
  log::notice("{} starting: netserver {}, personality {}, pid {}{}", name, version(), config.string("personality"),
              ::getpid(), inherited_.restarted ? " (restarted)" : "");
}

// Every configured address with its service: the main one's `listen` (or host:port), then each
// service's list key. The same address twice in one list is bound once; the same place (whatever
// the scheme) in two entries that differ is a configuration error naming both.
std::vector<Binding> ServerRuntime::bindings(const Config& config) const {
  std::vector<Binding> out;
  for (std::size_t service = 0; service < services.size(); ++service) {
    const std::string& key = services[service].listen_key;
    std::vector<std::string> texts = config.list(key);
    if (service == 0 && texts.empty()) {
      const std::string& host = config.string("host");
      const std::string port = std::to_string(config.integer("port"));
      texts.push_back(host.find(':') != std::string::npos ? "[" + host + "]:" + port : host + ":" + port);
    }
    for (const std::string& text : texts) {
      Binding binding{{}, service};
      std::string problem;
      if (!ListenAddress::parse(text, binding.address, problem))
        throw ConfigError(fmt::format("{}: \"{}\": {}", key, text, problem));
      const auto same_text = [&](const Binding& other) {
        return other.address.text() == binding.address.text() && other.service == service;
      };
      if (std::any_of(out.begin(), out.end(), same_text)) continue;
      // Port 0 asks for a free port: two of them are two sockets.
      const bool fixed = binding.address.kind == ListenAddress::Kind::unix_socket || binding.address.port != 0;
      // One text is one listener: a port-0 address in two services could not tell which protocol
      // its socket serves.
      const auto other_service = [&](const Binding& other) { return other.address.text() == binding.address.text(); };
      if (const auto clash = std::find_if(out.begin(), out.end(), other_service); !fixed && clash != out.end())
        throw ConfigError(fmt::format("{}: \"{}\" is also in {}: each service needs addresses of its own (for any "
                                      "free port, give each its own port or host) ({})",
                                      key, text, services[clash->service].listen_key, config.describe(key)));
      const auto same_place = [&](const Binding& other) { return place_of(other.address) == place_of(binding.address); };
      const auto earlier = fixed ? std::find_if(out.begin(), out.end(), same_place) : out.end();
      if (earlier == out.end()) {
        out.push_back(std::move(binding));
        continue;
      }
      throw ConfigError(fmt::format("{}: \"{}\" and {}: \"{}\" are the same address; one socket can be bound once ({})",
                                    services[earlier->service].listen_key, earlier->address.text(), key, text,
                                    config.describe(key)));
    }
  }
  return out;
}

std::vector<ListenAddress> ServerRuntime::addresses(const Config& config) const {
  std::vector<ListenAddress> out;
  for (Binding& binding : bindings(config)) out.push_back(std::move(binding.address));
  return out;
}

void ServerRuntime::pre_bind() { bindings_ = bindings(*config_); }

void ServerRuntime::bind() {
  std::vector<ListenAddress> wanted;
  for (const Binding& binding : bindings_) wanted.push_back(binding.address);
  listeners_ = open_listeners(wanted, inherited_, bind_options(*config_));
  schemes_.keep_across_restart();  // the TLS ticket secret, handed over like the listeners
  for (const Listener& listener : listeners_)
    log::notice("listening on {}{}", listener.tls() ? "tls://" : "", listener.name());
  make_endpoints();
}

// Each listener with its transport and its service's handler (systemd's sockets serve the main one).
void ServerRuntime::make_endpoints() {
  endpoints_.clear();
  status_endpoints_.clear();
  for (const Listener& listener : listeners_) {
    std::size_t service = 0;
    for (const Binding& binding : bindings_)
      if (binding.address.text() == listener.address()) service = binding.service;
    Endpoint endpoint{listener.fd(), listener.family(), listener.address(), listener.name(),
                      schemes_.factory(listener.scheme(), listener.address()), services[service].handler,
                      edge_.expects_proxy(listener.address())};
    if (services[service].toolkit) {
      status_endpoints_.push_back(std::move(endpoint));
      continue;
    }
    endpoint.metrics_index = endpoints_.size();
    endpoints_.push_back(std::move(endpoint));
    if (endpoints_.back().proxy_protocol) defer_accept(endpoints_.back());
  }
}

// The label of each listener in the metrics: as configured ("127.0.0.1:8000", "unix:/run/x"),
// or as bound where that repeats (port 0 twice, systemd's sockets).
std::vector<std::string> ServerRuntime::metrics_listeners() const {
  std::vector<std::string> names;
  for (const Endpoint& endpoint : endpoints_) {
    const bool repeated = std::count_if(endpoints_.begin(), endpoints_.end(),
                                        [&](const Endpoint& other) { return other.address == endpoint.address; }) > 1;
    names.push_back(repeated ? endpoint.name : endpoint.address);
  }
  return names;
}

// A client behind a balancer speaks first (its PROXY header): the kernel holds the connection
// until its first bytes arrive (at most proxy_timeout), so the accept path usually finds the whole
// header at once instead of waiting for it; a peer that never sends is never accepted.
void ServerRuntime::defer_accept(const Endpoint& endpoint) const {
  if (endpoint.family == AF_UNIX) return;
  const int seconds = static_cast<int>(std::ceil(std::max(1.0, to_seconds(edge_.proxy_timeout))));
  if (::setsockopt(endpoint.listener_fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof seconds) != 0)
    log::warning("{}", system_error_text("setsockopt(TCP_DEFER_ACCEPT) on " + endpoint.name, errno));
}

void ServerRuntime::post_bind() {
  const Config& config = *config_;
  if (config.boolean("background") && !detached_) {
    const std::string& log_file = config.string("log_file");
    detach(is_file_target(log_file) ? std::filesystem::absolute(log_file).string() : "");
    detached_ = true;
    log::notice("detached into the background: pid {}", ::getpid());
  }
  // From here a stop waits for the loop's handlers (the launcher above stays interruptible).
  hold_stop_signals_until_handled();
  if (pid_file_) pid_file_->write();
  drop_privileges(identity_, config.string("chroot"), owned_paths());
  std::signal(SIGPIPE, SIG_IGN);  // a vanished client costs its own session, not the process
  close_untaken_descriptors();
  // The metrics table, before anything forks (and after detaching: slot 0 is this process's);
  // the status listener's thread, which answers from now on.
  observatory_->open(metrics_listeners(), status_endpoints_);
  daemon_ready();
  // A new image is not the main process systemd knows (the anchor is): its status only.
  if (Succession::is_anchor())
    systemd::notify(fmt::format("READY=1\nSTATUS=serving on {} listener(s)\nMAINPID={}", listeners_.size(), ::getpid()));
  else systemd::notify(fmt::format("STATUS=serving on {} listener(s) (pid {})", listeners_.size(), ::getpid()));
}

// Files the server creates and must still remove or reopen after dropping root.
std::vector<std::string> ServerRuntime::owned_paths() const {
  std::vector<std::string> paths;
  if (pid_file_) paths.push_back(pid_file_->path());
  if (is_file_target(config_->string("log_file"))) paths.push_back(std::filesystem::absolute(config_->string("log_file")));
  for (const Listener& listener : listeners_)
    if (!listener.unix_path().empty()) paths.push_back(listener.unix_path());
  return paths;
}

// The personality serves until it stops -- or until it handed over to a new image and finished
// its own work: the anchor then relays to the images that follow until the server stops.
void ServerRuntime::loop() {
  personality->loop(server_);
  if (!handed_over_) return;
  if (!Succession::is_anchor()) return log::notice("pid {} handed over and finished its sessions", ::getpid());
  if (const int status = Succession::relay(*this); status != exit_status::ok)
    throw Error("the server went down with its serving image", status);
}

void ServerRuntime::server_close() {
  observatory_->stop_status();
  endpoints_.clear();
  status_endpoints_.clear();
  listeners_.clear();
  if (pid_file_) pid_file_->remove();
  log::notice("{} stopped", name);
}

bool ServerRuntime::allows(const std::string& peer) const {
  if (peer.starts_with("unix:")) return access_.allows("", true);
  const std::size_t colon = peer.rfind(':');
  std::string_view host = std::string_view(peer).substr(0, colon);
  if (host.starts_with('[')) host = host.substr(1, host.size() - 2);
  return access_.allows(host, false);
}

// --- restart (SIGHUP) ------------------------------------------------------------------------

bool ServerRuntime::prepare_restart() {
  added_for_restart_.clear();
  const std::filesystem::path here = std::filesystem::current_path();
  try {
    std::filesystem::current_path(relauncher_->directory());  // relative paths mean what they meant at start
    std::vector<const char*> argv;
    for (const std::string& argument : relauncher_->arguments()) argv.push_back(argument.c_str());
    Config fresh = Config::load(options, CommandLine::parse(static_cast<int>(argv.size()), argv.data(), options));
    check_restartable(fresh);
    for (const ListenAddress& where : addresses(fresh)) {
      const auto listening = [&](const Listener& l) { return l.address() == where.text() || l.address() == "systemd"; };
      if (std::none_of(listeners_.begin(), listeners_.end(), listening))
        bind_address(where, bind_options(fresh), added_for_restart_);
    }
    std::filesystem::current_path(here);
    return true;
  } catch (const std::exception& error) {
    log::error("HUP: {}; the running server carries on", error.what());
  }
  cancel_restart();
  std::error_code ignored;
  std::filesystem::current_path(here, ignored);
  return false;
}

// Everything the new image would check before serving, done here, so that a HUP either restarts
// or changes nothing: a new image that fails would take the listening sockets down with it.
void ServerRuntime::check_restartable(const Config& fresh) const {
  if (!config_->string("chroot").empty()) throw Error("cannot restart inside a chroot (the program is not reachable there)");
  personalities.find(fresh.string("personality"))->create(fresh);
  check_combinations(fresh);
  TransportSchemes::load(fresh, addresses(fresh));  // the new certificate and key must load, or the running server carries on
  const Identity wanted = Identity::resolve(fresh.string("user"), fresh.string("group"));
  const bool same_user = !wanted.change_user || wanted.uid == ::geteuid();
  const bool same_group = !wanted.change_group || wanted.gid == ::getegid();
  if (::geteuid() != 0 && (!same_user || !same_group))
    throw Error(fmt::format("the configuration asks for user '{}' / group '{}', but this server gave up root at start: "
                            "restart it instead of reloading",
                            fresh.string("user"), fresh.string("group")));
  std::string target = fresh.string("log_file");
  if (is_file_target(target)) target = std::filesystem::absolute(target).string();
  const std::string log_problem =
      log::probe(target, {fresh.string("syslog_ident"), fresh.string("syslog_facility"), fresh.string("syslog_socket")});
  if (!log_problem.empty()) throw Error(log_problem);
  if (const std::string& pid_file = fresh.string("pid_file"); !pid_file.empty())
    if (const std::string problem = PidFile::restart_problem(pid_file); !problem.empty()) throw Error(problem);
}

void ServerRuntime::cancel_restart() { added_for_restart_.clear(); }

pid_t ServerRuntime::start_new_image(const std::vector<int>& descriptors,
                                     const std::vector<std::pair<std::string, std::string>>& environment) {
  std::vector<const Listener*> handed_over;
  for (const Listener& listener : listeners_) handed_over.push_back(&listener);
  for (const Listener& listener : added_for_restart_) handed_over.push_back(&listener);
  return relauncher_->start(handed_over, descriptors, environment, detached_);
}

void ServerRuntime::release_listeners() {
  handed_over_ = true;
  observatory_->stop_status();  // the new image serves the status listener too
  for (Listener& listener : listeners_) ::close(listener.release());
  for (Listener& listener : added_for_restart_) ::close(listener.release());
  listeners_.clear();
  added_for_restart_.clear();
  for (Endpoint& endpoint : endpoints_) endpoint.listener_fd = -1;
}

// A listening socket stays open as long as one process holds a descriptor of it -- a PreFork child
// busy with a session, a restart's copy -- so it is shut down first: that stops the socket itself
// from listening (pending clients get a reset, new ones a refusal), whoever holds it. Never on a
// restart: the new image serves the same sockets. systemd keeps its sockets for the next start.
void ServerRuntime::stop_listening() {
  observatory_->stop_status();
  for (const Listener& listener : listeners_)
    if (listener.address() != "systemd" && ::shutdown(listener.fd(), SHUT_RD) != 0)
      log::warning("{}", system_error_text("shutdown() of the listener on " + listener.name(), errno));
  listeners_.clear();
  for (Endpoint& endpoint : endpoints_) endpoint.listener_fd = -1;
}

void ServerRuntime::close_listener_descriptors() {
  for (const Listener& listener : listeners_) ::close(listener.fd());
  for (const Listener& listener : added_for_restart_) ::close(listener.fd());
}

void ServerRuntime::reopen_log() {
  if (const std::string problem = log::reopen(); !problem.empty()) log::error("USR1: {}", problem);
  else log::notice("USR1: log reopened");
}

std::string ServerRuntime::help_text() const {
  std::string out = fmt::format(
      "Usage: {} [--config FILE] [--KEY=VALUE ...] [--check-config] [--help] [--version]\n\n"
      "Every key can be set in the YAML file given with --config and overridden on the command\n"
      "line (--port=9000, --prefork.max_servers=20). Defaults < file < command line.\n\n"
      "  --config FILE     read the configuration from FILE\n"
      "  --check-config    validate, print the effective configuration and exit\n"
      "  --help, --version\n\nKeys:\n",
      program.empty() ? name : program);
  for (const Option& option : options.all())
    out += fmt::format("  {:<30} {}\n  {:<30}   default {}\n", option.key, option.help, "", format_value(option.fallback));
  out += "\nPersonalities:\n";
  for (const PersonalityInfo& info : personalities.all()) out += fmt::format("  {:<12} {}\n", info.name, info.summary);
  return out;
}

}  // namespace netserver
