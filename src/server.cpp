#include "netserver/server.hpp"

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>

#include <fmt/format.h>

#include "bus/bus_options.hpp"
#include "daemon.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "netserver/version.hpp"
#include "restart.hpp"
#include "signals.hpp"
#include "systemd.hpp"
#include "tls.hpp"

namespace netserver {

std::string_view version() { return NETSERVER_VERSION_STRING; }

// What the operations steps keep between steps: the pid file, who to run as, how to restart.
struct Server::Operations {
  std::unique_ptr<PidFile> pid_file;
  Identity identity;
  std::unique_ptr<Relauncher> relauncher;
  Inheritance inherited;
  bool detached = false;               // in the background (now or since a previous image)
  std::vector<Listener> added_for_restart;
};

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

bool is_file_target(const std::string& target) { return target != "stderr" && target != "stdout" && target != "syslog"; }

}  // namespace

Server::Server(std::string name, std::shared_ptr<Handler> handler)
    : name_(std::move(name)),
      handler_(std::move(handler)),
      personalities_(Personalities::builtin()),
      ops_(std::make_unique<Operations>()) {
  log::configure(LogLevel::notice, "stderr");
  add_core_options();
  for (const PersonalityInfo& info : personalities_.all()) info.add_options(options_);
}

Server::~Server() = default;

void Server::add_core_options() {
  const double kib = 1024, mib = 1024 * kib, gib = 1024 * mib;
  options_.add(Option::text("personality", "single", "process model").with_choices(personalities_.names()));
  options_.add(Option::text("host", "*", "address to listen on with `port`: * (every address, IPv6 and IPv4), "
                                         "a name or a literal").with_check(check_host));
  options_.add(Option::integer("port", 8000, 0, 65535, "TCP port to listen on with `host` (0: any free port)"));
  options_.add(Option::list("listen", {}, "addresses to listen on instead of host:port: 127.0.0.1:8000, "
                                          "[::1]:8000, *:8000, unix:/path; tls://ADDRESS for TLS (the tls block)")
                   .with_check(check_listen));
  options_.add(Option::integer("backlog", 4096, 1, 1 << 20, "listen(2) queue length"));
  options_.add(Option::text("unix_mode", "", "file mode of unix sockets, e.g. 0660 (default: the umask's)")
                   .with_check(check_mode));
  options_.add(Option::integer("log_level", 2, 0, 4, "0 error, 1 warning, 2 notice, 3 info (connections), 4 debug"));
  options_.add(Option::text("log_file", "stderr",
                            "where the log goes: stderr, stdout, syslog, or a file path (appended to; "
                            "SIGUSR1 reopens it)"));
  options_.add(Option::text("syslog_ident", name_, "program name in syslog lines"));
  options_.add(Option::text("syslog_facility", "daemon", "syslog facility").with_choices(log::syslog_facilities()));
  options_.add(Option::text("syslog_socket", "/dev/log", "the syslog daemon's socket"));
  options_.add(Option::duration("timeout", 0, 0, 1e9, "close a client after this many seconds without input (0: never)"));
  options_.add(Option::size("max_line", 64 * 1024, 1, gib,
                            "longest input line in bytes; a longer one ends the client's session"));
  options_.add(Option::size("max_output", 1024 * 1024, kib, 4 * gib,
                            "output queued for one client (what its socket does not take) past which it is "
                            "disconnected; above half of it the client's input is not read"));
  options_.add(Option::size("max_output_soft", 0, 0, 4 * gib,
                            "output queued for one client that it may stay above for max_output_soft_seconds "
                            "only (0: no soft limit)"));
  options_.add(Option::duration("max_output_soft_seconds", 60, 0, 86400,
                                "how long a client's output queue may stay above max_output_soft"));
  options_.add(Option::duration("graceful_timeout", 10, 0, 86400,
                                "on TERM/INT, how long sessions may take to finish before they are cut"));
  options_.add(Option::duration("restart_drain_timeout", 0, 0, 1e9,
                                "on HUP, how long the sessions open may go on in the previous image before they "
                                "are cut (0: until they end; TERM/INT still ends them within graceful_timeout)"));
  options_.add(Option::flag("background", false, "detach from the terminal and run as a daemon"));
  options_.add(Option::text("pid_file", "", "write the server's pid here; refuse to start if it names a live process"));
  options_.add(Option::text("user", "", "switch to this user (name or uid) after binding, when started as root"));
  options_.add(Option::text("group", "", "switch to this group (name or gid) after binding (default: the user's)"));
  options_.add(Option::text("chroot", "", "chroot to this directory after binding (no restart on HUP then)"));
  options_.add(Option::list("allow", {}, "regular expressions: peers whose address matches one are allowed")
                   .with_check(check_regex_list));
  options_.add(Option::list("deny", {}, "regular expressions: peers whose address matches one are refused")
                   .with_check(check_regex_list));
  options_.add(Option::list("cidr_allow", {}, "networks whose peers are allowed: 10.0.0.0/8, ::1/128")
                   .with_check(check_network_list));
  options_.add(Option::list("cidr_deny", {}, "networks whose peers are refused").with_check(check_network_list));
  TlsContext::add_options(options_);
  bus::add_bus_options(options_, name_);
}

void Server::add_personality(PersonalityInfo info) {
  info.add_options(options_);
  personalities_.add(std::move(info));
  Option personality = *options_.find("personality");
  personality.choices = personalities_.names();
  options_.add(std::move(personality));
}

int Server::main(int argc, char** argv) {
  std::string failure;
  int status = exit_status::ok;
  try {
    run(argc, argv);
    return exit_status::ok;
  } catch (const Exit& exit) {
    return exit.status();
  } catch (const ConfigError& error) {
    failure = fmt::format("{}: {}", program_.empty() ? name_ : program_, error.what());
    fmt::print(stderr, "{}\n", failure);
    status = error.status();
  } catch (const Error& error) {
    log::error("{}", error.what());
    failure = fmt::format("{}: {}", program_, error.what());
    if (!log::to_stderr()) fmt::print(stderr, "{}\n", failure);
    status = error.status();
  } catch (const std::exception& error) {
    log::error("fatal: {}", error.what());
    failure = fmt::format("{}: fatal: {}", program_, error.what());
    if (!log::to_stderr()) fmt::print(stderr, "{}\n", failure);
    status = exit_status::failure;
  }
  daemon_failed(failure);  // a detached server tells the process still waiting on the terminal
  if (ops_->pid_file) ops_->pid_file->remove();
  return status;
}

void Server::run(int argc, char** argv) {
  hold_signals_until_handled();  // HUP or USR1 during start-up wait for the loop's handlers
  configure_hook();
  configure(argc, argv);    // defaults < --config FILE < --key=value; picks the personality
  post_configure();         // logging, pid file check, user/group, access rules, session limits
  post_configure_hook();
  pre_bind();               // the addresses to listen on
  bind();                   // listening sockets: inherited (restart, systemd) or bound now
  post_bind_hook();
  post_bind();              // background, pid file, chroot, user/group, SIGPIPE; ready
  pre_loop_hook();
  loop();                   // the personality serves clients until told to stop
  pre_server_close_hook();
  server_close();           // close the listeners, remove the pid file
}

void Server::configure(int argc, char** argv) {
  program_ = argc > 0 ? std::filesystem::path(argv[0]).filename().string() : name_;
  ops_->relauncher = std::make_unique<Relauncher>(argc, argv);
  const CommandLine command_line = CommandLine::parse(argc, argv, options_);
  if (command_line.help) {
    fmt::print("{}", help_text());
    throw Exit(exit_status::ok);
  }
  if (command_line.version) {
    fmt::print("{} (netserver {})\n", name_, version());
    throw Exit(exit_status::ok);
  }
  config_.emplace(Config::load(options_, command_line));
  personality_ = personalities_.find(config_->string("personality"))->create(*config_);
  check_combinations(*config_);
  if (command_line.check_config) {
    fmt::print("{}# configuration OK\n", config_->dump());
    throw Exit(exit_status::ok);
  }
}

// Settings that are fine alone but not together.
void Server::check_combinations(const Config& config) const {
  if (config.bytes("max_output_soft") >= config.bytes("max_output"))
    throw ConfigError(fmt::format("max_output_soft must be less than max_output: {} and {}",
                                  config.describe("max_output_soft"), config.describe("max_output")));
  bus::check_bus_combinations(config);
  if (config.boolean("background") && !is_file_target(config.string("log_file")) && config.string("log_file") != "syslog")
    throw ConfigError(fmt::format("background: true needs log_file set to a file or syslog: {} is closed when the "
                                  "server detaches ({})",
                                  config.string("log_file"), config.describe("log_file")));
}

void Server::post_configure() {
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
  limits_.max_output_soft_seconds = config.seconds("max_output_soft_seconds");
  limits_.idle_timeout = config.seconds("timeout");
  limits_.close_timeout = config.seconds("graceful_timeout");
  access_ = AccessRules(config.list("allow"), config.list("deny"), config.list("cidr_allow"), config.list("cidr_deny"));
  if (config.list("allow").empty() && config.list("cidr_allow").empty() && !access_.empty())
    log::warning("only deny rules are set: as in Net::Server, peers that match no allow or cidr_allow rule are "
                 "refused too");
  if (std::shared_ptr<TlsContext> tls = load_tls(config)) TlsContext::install(std::move(tls));  // as root, before binding
  ops_->identity = Identity::resolve(config.string("user"), config.string("group"));
  if (!config.string("pid_file").empty()) {
    ops_->pid_file = std::make_unique<PidFile>(config.string("pid_file"));
    ops_->pid_file->check();
  }
  ops_->inherited = Inheritance::take();
  ops_->detached = ops_->inherited.detached;
  log::notice("{} starting: netserver {}, personality {}, pid {}{}", name_, version(), personality_name(), ::getpid(),
              ops_->inherited.restarted ? " (restarted)" : "");
}

std::vector<ListenAddress> Server::listen_addresses(const Config& config) const {
  std::vector<std::string> texts = config.list("listen");
  if (texts.empty()) {
    const std::string& host = config.string("host");
    const std::string port = std::to_string(config.integer("port"));
    texts.push_back(host.find(':') != std::string::npos ? "[" + host + "]:" + port : host + ":" + port);
  }
  std::vector<ListenAddress> addresses;
  for (const std::string& text : texts) {
    ListenAddress address;
    std::string problem;
    if (!ListenAddress::parse(text, address, problem)) throw ConfigError(fmt::format("listen: \"{}\": {}", text, problem));
    if (address.kind == ListenAddress::Kind::unix_socket)  // made absolute: removed at exit, after any chdir
      address.path = std::filesystem::absolute(address.path).lexically_normal().string();
    addresses.push_back(std::move(address));
  }
  return addresses;
}

void Server::pre_bind() { addresses_ = listen_addresses(*config_); }

// The TLS context for the configuration's tls:// listeners; null when there are none.
std::shared_ptr<TlsContext> Server::load_tls(const Config& config) const {
  std::vector<std::string> tls_listeners;
  for (const ListenAddress& address : listen_addresses(config))
    if (address.tls) tls_listeners.push_back(address.text());
  if (tls_listeners.empty()) return nullptr;
  return TlsContext::load(config, tls_listeners);
}

namespace {
BindOptions bind_options(const Config& config) {
  BindOptions options;
  options.backlog = static_cast<int>(config.integer("backlog"));
  if (!config.string("unix_mode").empty()) options.unix_mode = std::stoi(config.string("unix_mode"), nullptr, 8);
  return options;
}
}  // namespace

void Server::bind() {
  listeners_ = open_listeners(addresses_, ops_->inherited, bind_options(*config_));
  for (const Listener& listener : listeners_) log::notice("listening on {}{}", listener.tls() ? "tls://" : "", listener.name());
}

void Server::post_bind() {
  const Config& config = *config_;
  if (config.boolean("background") && !ops_->detached) {
    const std::string& log_file = config.string("log_file");
    detach(is_file_target(log_file) ? std::filesystem::absolute(log_file).string() : "");
    ops_->detached = true;
    log::notice("detached into the background: pid {}", ::getpid());
  }
  // From here a stop waits for the loop's handlers (the launcher above stays interruptible).
  hold_stop_signals_until_handled();
  if (ops_->pid_file) ops_->pid_file->write();
  drop_privileges(ops_->identity, config.string("chroot"), owned_paths());
  std::signal(SIGPIPE, SIG_IGN);  // a vanished client costs its own session, not the process
  daemon_ready();
  systemd::notify(fmt::format("READY=1\nSTATUS=serving on {} listener(s)\nMAINPID={}", listeners_.size(), ::getpid()));
}

// Files the server creates and must still remove or reopen after dropping root.
std::vector<std::string> Server::owned_paths() const {
  std::vector<std::string> paths;
  if (ops_->pid_file) paths.push_back(ops_->pid_file->path());
  if (is_file_target(config_->string("log_file"))) paths.push_back(std::filesystem::absolute(config_->string("log_file")));
  for (const Listener& listener : listeners_)
    if (!listener.unix_path().empty()) paths.push_back(listener.unix_path());
  return paths;
}

void Server::loop() { personality_->loop(*this); }

void Server::server_close() {
  listeners_.clear();
  if (ops_->pid_file) ops_->pid_file->remove();
  log::notice("{} stopped", name_);
}

const std::string& Server::personality_name() const { return config().string("personality"); }

const Config& Server::config() const {
  if (!config_) throw std::logic_error("Server::config() used before the configure step");
  return *config_;
}

bool Server::allow_deny(const Session& session) const {
  const std::string& peer = session.peer();
  if (peer.starts_with("unix:")) return access_.allows("", true);
  const std::size_t colon = peer.rfind(':');
  std::string_view host = std::string_view(peer).substr(0, colon);
  if (host.starts_with('[')) host = host.substr(1, host.size() - 2);
  return access_.allows(host, false);
}

// --- restart (SIGHUP) ------------------------------------------------------------------------

bool Server::prepare_restart() {
  ops_->added_for_restart.clear();
  const Relauncher& relauncher = *ops_->relauncher;
  const std::filesystem::path here = std::filesystem::current_path();
  try {
    std::filesystem::current_path(relauncher.directory());  // relative paths mean what they meant at start
    std::vector<const char*> argv;
    for (const std::string& argument : relauncher.arguments()) argv.push_back(argument.c_str());
    Config fresh = Config::load(options_, CommandLine::parse(static_cast<int>(argv.size()), argv.data(), options_));
    check_restartable(fresh);
    for (const ListenAddress& where : listen_addresses(fresh)) {
      const auto listening = [&](const Listener& l) { return l.address() == where.text() || l.address() == "systemd"; };
      if (std::none_of(listeners_.begin(), listeners_.end(), listening))
        bind_address(where, bind_options(fresh), ops_->added_for_restart);
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
void Server::check_restartable(const Config& fresh) const {
  if (!config_->string("chroot").empty()) throw Error("cannot restart inside a chroot (the program is not reachable there)");
  personalities_.find(fresh.string("personality"))->create(fresh);
  check_combinations(fresh);
  load_tls(fresh);  // the new certificate and key must load, or the running server carries on
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

void Server::cancel_restart() { ops_->added_for_restart.clear(); }

void Server::restart(const std::vector<pid_t>& children) {
  std::vector<const Listener*> handed_over;
  for (const Listener& listener : listeners_) handed_over.push_back(&listener);
  for (const Listener& listener : ops_->added_for_restart) handed_over.push_back(&listener);
  systemd::notify("RELOADING=1");
  ops_->relauncher->exec(handed_over, children, ops_->detached);
  ops_->added_for_restart.clear();
  systemd::notify("READY=1");
}

const std::vector<pid_t>& Server::inherited_children() const { return ops_->inherited.children; }

// A listening socket stays open as long as one process holds a descriptor of it -- a PreFork child
// busy with a session, a restart's copy -- so it is shut down first: that stops the socket itself
// from listening (pending clients get a reset, new ones a refusal), whoever holds it. Never on a
// restart: the new image serves the same sockets. systemd keeps its sockets for the next start.
void Server::stop_listening() {
  for (const Listener& listener : listeners_)
    if (listener.address() != "systemd" && ::shutdown(listener.fd(), SHUT_RD) != 0)
      log::warning("{}", system_error_text("shutdown() of the listener on " + listener.name(), errno));
  listeners_.clear();
}

void Server::close_listeners_in_copy() {
  for (const Listener& listener : listeners_) ::close(listener.fd());
  for (const Listener& listener : ops_->added_for_restart) ::close(listener.fd());
}

void Server::reopen_log() {
  if (const std::string problem = log::reopen(); !problem.empty()) log::error("USR1: {}", problem);
  else log::notice("USR1: log reopened");
}

std::string Server::help_text() const {
  std::string out = fmt::format(
      "Usage: {} [--config FILE] [--KEY=VALUE ...] [--check-config] [--help] [--version]\n\n"
      "Every key can be set in the YAML file given with --config and overridden on the command\n"
      "line (--port=9000, --prefork.max_servers=20). Defaults < file < command line.\n\n"
      "  --config FILE     read the configuration from FILE\n"
      "  --check-config    validate, print the effective configuration and exit\n"
      "  --help, --version\n\nKeys:\n",
      program_.empty() ? name_ : program_);
  for (const Option& option : options_.all())
    out += fmt::format("  {:<30} {}\n  {:<30}   default {}\n", option.key, option.help, "", format_value(option.fallback));
  out += "\nPersonalities:\n";
  for (const PersonalityInfo& info : personalities_.all()) out += fmt::format("  {:<12} {}\n", info.name, info.summary);
  return out;
}

}  // namespace netserver
