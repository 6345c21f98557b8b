#pragma once
// What the metrics tests share: curl, the samples of a text-format exposition, promtool, a real
// Prometheus on a free loopback port, and the status listener's port as the server logged it.

#include <signal.h>

#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <boost/process/args.hpp>
#include <boost/process/child.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/io.hpp>
#include <catch2/catch.hpp>

#include "harness.hpp"

namespace metrics_checks {

using namespace harness;

struct Response {
  int status = 0;
  std::string headers;
  std::string body;
};

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// curl `url` with `extra` options; the status line and headers apart from the body.
inline Response curl(const std::string& url, std::vector<std::string> extra = {}) {
  TempDir dir;
  std::vector<std::string> args{"-sS", "--max-time", "10", "-D", (dir.path() / "headers").string(), "-o",
                                (dir.path() / "body").string()};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back(url);
  const Outcome outcome = run("/usr/bin/curl", args);
  INFO(outcome.output);
  REQUIRE(outcome.status == 0);
  Response response{0, read_text(dir.path() / "headers"), read_text(dir.path() / "body")};
  std::smatch match;
  if (std::regex_search(response.headers, match, std::regex(R"(^HTTP/1\.1 (\d{3}) )"))) response.status = std::stoi(match[1]);
  return response;
}

inline std::string url(int port, const std::string& path) { return "http://127.0.0.1:" + std::to_string(port) + path; }

// Series -> value of a text-format exposition.
inline std::map<std::string, double> samples_of(const std::string& text) {
  std::map<std::string, double> samples;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line.starts_with('#')) continue;
    const std::size_t space = line.rfind(' ');
    samples[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return samples;
}

// A sample's value; 0 for a series the exposition does not have.
inline double sample(const std::map<std::string, double>& samples, const std::string& series) {
  const auto found = samples.find(series);
  return found == samples.end() ? 0 : found->second;
}

inline std::string promtool_problems(const std::string& text) {
  TempDir dir;
  const auto file = dir.write("metrics.txt", text);
  const Outcome outcome = run("/bin/sh", {"-c", "/usr/bin/promtool check metrics < " + file.string()});
  return outcome.status == 0 ? "" : outcome.output;
}

// `listen` on any free port and the status listener on another (two entries "127.0.0.1:0" would
// be one address).
inline std::string status_yaml() {
  return "listen: [\"127.0.0.1:0\"]\nstatus:\n  listen: [\"127.0.0.1:" + std::to_string(free_port()) + "\"]\n";
}

// The TCP port of the status listener (`status.listen: ["127.0.0.1:0"]`), from its log line.
inline int status_port(const ServerProcess& server) {
  REQUIRE(server.wait_for_log("status listener on 127.0.0.1:"));
  std::smatch match;
  const std::string log = server.log();
  REQUIRE(std::regex_search(log, match, std::regex(R"(status listener on 127\.0\.0\.1:(\d+))")));
  return std::stoi(match[1]);
}

// A real Prometheus on a free loopback port scraping `target` every second, stopped by pid.
class Prometheus {
 public:
  explicit Prometheus(int target) : port_(free_port()) {
    const auto config = dir_.write("prometheus.yml", fmt_config(target));
    child_ = boost::process::child(
        boost::process::exe = "/usr/bin/prometheus",
        boost::process::args = {"--config.file=" + config.string(), "--storage.tsdb.path=" + (dir_.path() / "data").string(),
                                "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=warn"},
        (boost::process::std_out & boost::process::std_err) > (dir_.path() / "prometheus.log"),
        boost::process::std_in < boost::process::null);
  }
  ~Prometheus() {
    ::kill(static_cast<pid_t>(child_.id()), SIGTERM);
    if (!eventually([&] { return !child_.running(); }, 20s)) ::kill(static_cast<pid_t>(child_.id()), SIGKILL);
    child_.wait();
  }
  Prometheus(const Prometheus&) = delete;
  Prometheus& operator=(const Prometheus&) = delete;

  /// The value of `query` (an instant vector of one element), or nullopt while it has none.
  std::optional<double> query(const std::string& query) const {
    TempDir dir;
    const auto script = dir.write("parse.py",
                                  "import json,sys\nd=json.load(sys.stdin)\nr=d['data']['result']\n"
                                  "print(r[0]['value'][1] if len(r)==1 else 'none')\n");
    const Outcome outcome =
        run("/bin/sh", {"-c", "/usr/bin/curl -sS -G --max-time 5 --data-urlencode \"query=$0\" "
                              "http://127.0.0.1:" + std::to_string(port_) + "/api/v1/query | python3 " + script.string(),
                        query});
    if (outcome.status != 0 || outcome.output.starts_with("none")) return std::nullopt;
    return std::stod(outcome.output);
  }
  std::string log() const { return read_text(dir_.path() / "prometheus.log"); }

 private:
  static std::string fmt_config(int target) {
    return "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: probe\n"
           "    static_configs:\n      - targets: ['127.0.0.1:" + std::to_string(target) + "']\n";
  }
  TempDir dir_;
  int port_;
  boost::process::child child_;
};

}  // namespace metrics_checks
