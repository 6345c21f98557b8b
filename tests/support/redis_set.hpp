#pragma once
// Real Redis for the bus tests (never a mock): one redis-server, or a set of a master, a replica
// and three Sentinels (Debian's redis-server and redis-sentinel), on free loopback ports, each
// started and stopped by its own pid.

#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "harness.hpp"

namespace harness {

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

/// A real redis-server of our own on a free port (or a given one, to restart on the same port);
/// stopped by its pid when destroyed. `wrapper` runs it elsewhere (ip netns exec NS). With
/// `sentinel_config` it is a Sentinel (redis-sentinel) with that configuration file, which it
/// rewrites as Sentinels do.
class Redis {
 public:
  explicit Redis(std::vector<std::string> options = {}, int port = 0, std::vector<std::string> wrapper = {},
                 std::string bind = "127.0.0.1", std::string sentinel_config = "")
      : options_(std::move(options)),
        wrapper_(std::move(wrapper)),
        bind_(std::move(bind)),
        sentinel_config_(std::move(sentinel_config)),
        port_(port ? port : free_port()) {
    start();
  }
  ~Redis() { stop(); }
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  void start() {
    const std::string log = (dir_.path() / ("redis-" + std::to_string(++starts_) + ".log")).string();
    std::vector<std::string> args = wrapper_;
    if (sentinel_config_.empty()) {
      args.push_back("redis-server");
    } else {
      args.push_back("redis-sentinel");
      if (starts_ == 1) dir_.write("sentinel.conf", sentinel_config_);
      args.push_back((dir_.path() / "sentinel.conf").string());
    }
    for (const std::string& word : {std::string("--port"), std::to_string(port_), std::string("--bind"), bind_,
                                    std::string("--save"), std::string(""), std::string("--appendonly"), std::string("no"),
                                    std::string("--logfile"), log, std::string("--dir"), dir_.path().string()})
      args.push_back(word);
    args.insert(args.end(), options_.begin(), options_.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (std::string& word : args) argv.push_back(word.data());
      argv.push_back(nullptr);
      ::execvp(argv[0], argv.data());
      ::_exit(127);
    }
    const char* ready = sentinel_config_.empty() ? "eady to accept connections" : "Sentinel ID is";
    if (!eventually([&] { return read_text(log).find(ready) != std::string::npos; }, 10s))
      throw std::runtime_error(args[wrapper_.size()] + " did not start:\n" + read_text(log));
  }
  void signal(int number) const { ::kill(pid_, number); }
  // SIGKILL and reap.
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGTERM);
    if (!eventually([&] { return ::waitpid(pid_, nullptr, WNOHANG) == pid_; }, 5s)) kill();
    pid_ = -1;
  }
  bool running() const { return pid_ > 0; }
  int port() const { return port_; }
  std::string url(const std::string& password = "") const {
    return "redis://" + (password.empty() ? "" : ":" + password + "@") + "127.0.0.1:" + std::to_string(port_);
  }
  // redis-cli against this server; its output.
  std::string cli(std::vector<std::string> args, const std::string& password = "") const {
    std::vector<std::string> full{"-h", "127.0.0.1", "-p", std::to_string(port_)};
    if (!password.empty()) full.insert(full.end(), {"--no-auth-warning", "-a", password});
    full.insert(full.end(), args.begin(), args.end());
    return run("/usr/bin/redis-cli", full, 5s).output;
  }

 private:
  TempDir dir_;
  std::vector<std::string> options_;
  std::vector<std::string> wrapper_;
  std::string bind_;
  std::string sentinel_config_;
  int port_;
  pid_t pid_ = -1;
  int starts_ = 0;
};

/// A master, one replica of it and three Sentinels watching it as "netserver" (quorum 2), with
/// fast failure detection: down after 1 s, a failover attempt at most every 3 s. Ready when
/// constructed: the replica is in sync and every Sentinel knows the replica and the two others.
/// `sentinel_ports` (three, or none: free ones) lets a test point a server at them beforehand.
class RedisSet {
 public:
  static constexpr const char* name = "netserver";

  explicit RedisSet(std::string password = "", std::string sentinel_password = "", std::vector<int> sentinel_ports = {})
      : password_(std::move(password)), sentinel_password_(std::move(sentinel_password)) {
    std::vector<std::string> auth;
    if (!password_.empty()) auth = {"--requirepass", password_, "--masterauth", password_};
    nodes_.push_back(std::make_unique<Redis>(auth));
    std::vector<std::string> replica = auth;
    replica.insert(replica.end(), {"--replicaof", "127.0.0.1", std::to_string(nodes_[0]->port())});
    nodes_.push_back(std::make_unique<Redis>(replica));
    if (!eventually([&] { return node(1).cli({"INFO", "replication"}, password_).find("master_link_status:up") != std::string::npos; }, 10s))
      throw std::runtime_error("the replica did not sync");
    std::string config = "sentinel resolve-hostnames no\nsentinel monitor " + std::string(name) + " 127.0.0.1 " +
                         std::to_string(nodes_[0]->port()) + " 2\nsentinel down-after-milliseconds " + name +
                         " 1000\nsentinel failover-timeout " + name + " 3000\n";
    if (!password_.empty()) config += "sentinel auth-pass " + std::string(name) + " " + password_ + "\n";
    if (!sentinel_password_.empty())
      config += "requirepass " + sentinel_password_ + "\nsentinel sentinel-pass " + sentinel_password_ + "\n";
    for (int i = 0; i < 3; ++i)
      sentinels_.push_back(std::make_unique<Redis>(std::vector<std::string>{}, sentinel_ports.empty() ? 0 : sentinel_ports[i],
                                                   std::vector<std::string>{}, "127.0.0.1", config));
    for (int i = 0; i < 3; ++i)
      if (!eventually([&] {
            const std::string master = sentinel_cli(i, {"SENTINEL", "MASTER", name});
            return master.find("num-slaves\n1\n") != std::string::npos && master.find("num-other-sentinels\n2\n") != std::string::npos;
          }, 20s))
        throw std::runtime_error("Sentinel " + std::to_string(i) + " does not see the set:\n" + sentinel_cli(i, {"SENTINEL", "MASTER", name}));
  }

  /// The bus address of the set: redis-sentinel://[:PASSWORD@]S1,S2,S3/netserver.
  std::string url() const {
    std::string text = "redis-sentinel://" + (password_.empty() ? "" : ":" + password_ + "@");
    for (std::size_t i = 0; i < sentinels_.size(); ++i)
      text += (i ? "," : "") + std::string("127.0.0.1:") + std::to_string(sentinels_[i]->port());
    return text + "/" + name;
  }
  /// Data node 0 (the first master) or 1 (its replica at first).
  Redis& node(int i) { return *nodes_.at(i); }
  Redis& sentinel(int i) { return *sentinels_.at(i); }
  const std::string& password() const { return password_; }
  std::string sentinel_cli(int i, std::vector<std::string> args) const { return sentinels_.at(i)->cli(std::move(args), sentinel_password_); }
  /// The data node Sentinel 0 names as master now (-1: none of them).
  int master() const {
    const std::string answer = sentinel_cli(0, {"SENTINEL", "get-master-addr-by-name", name});
    for (int i = 0; i < 2; ++i)
      if (answer.find("\n" + std::to_string(nodes_[i]->port())) != std::string::npos) return i;
    return -1;
  }
  /// True once node `i` says it is the master and every running Sentinel names it.
  bool promoted(int i) const {
    if (nodes_[i]->cli({"ROLE"}, password_).rfind("master", 0) != 0) return false;
    for (int s = 0; s < 3; ++s)
      if (sentinels_[s]->running() &&sentinel_cli(s, {"SENTINEL", "get-master-addr-by-name", name}).find("\n" + std::to_string(nodes_[i]->port())) ==
          std::string::npos)
        return false;
    return true;
  }
  /// Subscribers of `channel` on node `i` (PUBSUB NUMSUB); -1 when it does not answer.
  int subscribers(int i, const std::string& channel) const {
    const std::string answer = nodes_[i]->cli({"PUBSUB", "NUMSUB", channel}, password_);
    const std::size_t line = answer.rfind('\n', answer.size() >= 2 ? answer.size() - 2 : 0);
    try {
      return std::stoi(answer.substr(line == std::string::npos ? 0 : line + 1));
    } catch (const std::exception&) {
      return -1;
    }
  }

 private:
  std::string password_;
  std::string sentinel_password_;
  std::vector<std::unique_ptr<Redis>> nodes_;
  std::vector<std::unique_ptr<Redis>> sentinels_;
};

}  // namespace harness
