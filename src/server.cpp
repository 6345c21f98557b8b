#include "netserver/server.hpp"

#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <cstdio>

#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"

namespace netserver {

std::string_view version() { return NETSERVER_VERSION; }

namespace {

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

// More descriptors than the usual soft limit of 1024 are needed for thousands of clients.
void raise_descriptor_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) log::warning("{}", system_error_text("setrlimit(RLIMIT_NOFILE)", errno));
  }
}

}  // namespace

Server::Server(std::string name, std::shared_ptr<Handler> handler)
    : name_(std::move(name)), handler_(std::move(handler)), personalities_(Personalities::builtin()) {
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
                                          "[::1]:8000, *:8000, unix:/path").with_check(check_listen));
  options_.add(Option::integer("backlog", 4096, 1, 1 << 20, "listen(2) queue length"));
  options_.add(Option::integer("log_level", 2, 0, 4, "0 error, 1 warning, 2 notice, 3 info (connections), 4 debug"));
  options_.add(Option::text("log_file", "stderr", "where the log goes: stderr, stdout or a file path (appended to)"));
  options_.add(Option::duration("timeout", 0, 0, 1e9, "close a client after this many seconds without input (0: never)"));
  options_.add(Option::size("max_line", 64 * 1024, 1, gib,
                            "longest input line in bytes; a longer one ends the client's session"));
  options_.add(Option::size("max_output", 1024 * 1024, kib, 4 * gib,
                            "output queued for one client past which it is disconnected"));
  options_.add(Option::duration("graceful_timeout", 10, 0, 86400,
                                "on TERM/INT, how long sessions may take to finish before they are cut"));
}

void Server::add_personality(PersonalityInfo info) {
  info.add_options(options_);
  personalities_.add(std::move(info));
  Option personality = *options_.find("personality");
  personality.choices = personalities_.names();
  options_.add(std::move(personality));
}

int Server::main(int argc, char** argv) {
  try {
    run(argc, argv);
    return exit_status::ok;
  } catch (const Exit& exit) {
    return exit.status();
  } catch (const ConfigError& error) {
    fmt::print(stderr, "{}: {}\n", program_.empty() ? name_ : program_, error.what());
    return error.status();
  } catch (const Error& error) {
    log::error("{}", error.what());
    if (!log::to_stderr()) fmt::print(stderr, "{}: {}\n", program_, error.what());
    return error.status();
  } catch (const std::exception& error) {
    log::error("fatal: {}", error.what());
    if (!log::to_stderr()) fmt::print(stderr, "{}: fatal: {}\n", program_, error.what());
    return exit_status::failure;
  }
}

void Server::run(int argc, char** argv) {
  configure_hook();
  configure(argc, argv);    // defaults < --config FILE < --key=value; picks the personality
  post_configure();         // logging, descriptor limit, session limits
  post_configure_hook();
  pre_bind();               // the addresses to listen on
  bind();                   // the listening sockets
  post_bind_hook();
  post_bind();              // signals
  pre_loop_hook();
  loop();                   // the personality serves clients until told to stop
  pre_server_close_hook();
  server_close();           // close the listeners
}

void Server::configure(int argc, char** argv) {
  program_ = argc > 0 ? std::filesystem::path(argv[0]).filename().string() : name_;
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
  if (command_line.check_config) {
    fmt::print("{}# configuration OK\n", config_->dump());
    throw Exit(exit_status::ok);
  }
}

void Server::post_configure() {
  const Config& config = *config_;
  log::configure(static_cast<LogLevel>(config.integer("log_level")), config.string("log_file"));
  raise_descriptor_limit();
  limits_.max_line = static_cast<std::size_t>(config.bytes("max_line"));
  limits_.max_output = static_cast<std::size_t>(config.bytes("max_output"));
  limits_.idle_timeout = config.seconds("timeout");
  log::notice("{} starting: netserver {}, personality {}, pid {}", name_, version(), personality_name(), ::getpid());
}

void Server::pre_bind() {
  const Config& config = *config_;
  std::vector<std::string> texts = config.list("listen");
  if (texts.empty()) {
    const std::string& host = config.string("host");
    const std::string port = std::to_string(config.integer("port"));
    texts.push_back(host.find(':') != std::string::npos ? "[" + host + "]:" + port : host + ":" + port);
  }
  addresses_.clear();
  for (const std::string& text : texts) {
    ListenAddress address;
    std::string problem;
    if (!ListenAddress::parse(text, address, problem)) throw ConfigError(fmt::format("listen: \"{}\": {}", text, problem));
    addresses_.push_back(std::move(address));
  }
}

void Server::bind() {
  BindOptions options;
  options.backlog = static_cast<int>(config_->integer("backlog"));
  listeners_ = bind_listeners(addresses_, options);
  for (const Listener& listener : listeners_) log::notice("listening on {}", listener.name());
}

void Server::post_bind() {
  std::signal(SIGPIPE, SIG_IGN);  // a vanished client costs its own session, not the process
}

void Server::loop() { personality_->loop(*this); }

void Server::server_close() {
  listeners_.clear();
  log::notice("{} stopped", name_);
}

const std::string& Server::personality_name() const { return config().string("personality"); }

const Config& Server::config() const {
  if (!config_) throw std::logic_error("Server::config() used before the configure step");
  return *config_;
}

bool Server::allow_deny(const Session&) const { return true; }

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
