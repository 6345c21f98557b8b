// Config: defaults < file < command line, typed values, and every error a user can make.

#include <catch2/catch.hpp>

#include <netserver/netserver.hpp>

#include "harness.hpp"

using namespace netserver;
using Catch::Matchers::Contains;
using Catch::Matchers::Equals;

namespace {

class NullHandler : public LineHandler {
  void on_line(Session&, std::string_view) override {}
};

// The real server's schema, plus an application block to exercise nested keys.
struct Fixture {
  Server server{"test", std::make_shared<NullHandler>()};
  harness::TempDir dir;
  Fixture() {
    server.options().add(Option::integer("app.workers", 4, 1, 64, "demo block key"));
    server.options().add(Option::flag("app.verbose", false, "demo flag"));
  }
  Config load(const std::string& yaml, std::vector<std::string> args = {}) {
    std::vector<std::string> all{"test"};
    if (!yaml.empty()) all.insert(all.end(), {"--config", dir.write("conf.yaml", yaml).string()});
    all.insert(all.end(), args.begin(), args.end());
    std::vector<const char*> argv;
    for (const std::string& arg : all) argv.push_back(arg.c_str());
    const CommandLine command_line = CommandLine::parse(static_cast<int>(argv.size()), argv.data(), server.options());
    return Config::load(server.options(), command_line);
  }
  std::string error_of(const std::string& yaml, std::vector<std::string> args = {}) {
    try {
      load(yaml, std::move(args));
    } catch (const ConfigError& error) {
      return error.what();
    }
    return "no error";
  }
  std::string file() const { return (dir.path() / "conf.yaml").string(); }
};

}  // namespace

TEST_CASE("defaults follow Net::Server where it has a name", "[config]") {
  Fixture f;
  const Config config = f.load("");
  CHECK(config.string("personality") == "single");
  CHECK(config.string("host") == "*");
  CHECK(config.integer("port") == 8000);
  CHECK(config.list("listen").empty());
  CHECK(config.integer("log_level") == 2);
  CHECK(config.string("log_file") == "stderr");
  CHECK(config.seconds("timeout") == 0);
  CHECK(config.bytes("max_line") == 65536);
  CHECK(config.integer("app.workers") == 4);
  CHECK(config.origin("port").describe() == "default");
}

TEST_CASE("the file overrides defaults and the command line overrides the file", "[config]") {
  Fixture f;
  const Config config = f.load("port: 9000\nlog_level: 3\napp:\n  workers: 8\n",
                               {"--port=9100", "--app.workers", "16", "--app.verbose"});
  CHECK(config.integer("port") == 9100);
  CHECK(config.origin("port").describe() == "command line --port=9100");
  CHECK(config.integer("log_level") == 3);
  CHECK(config.origin("log_level").describe() == f.file() + ":2:12");
  CHECK(config.integer("app.workers") == 16);
  CHECK(config.boolean("app.verbose"));
  CHECK(config.integer("max_line") == 65536);
}

TEST_CASE("dotted keys work in the file too and dashes on the command line", "[config]") {
  Fixture f;
  const Config config = f.load("app.workers: 2\n", {"--max-line=1K"});
  CHECK(config.integer("app.workers") == 2);
  CHECK(config.bytes("max_line") == 1024);
}

TEST_CASE("values are converted by type and trimmed", "[config]") {
  Fixture f;
  const Config config = f.load(
      "log_file: \"  /tmp/x.log  \"\nmax_line: 64K\nmax_output: 2MiB\ntimeout: 500ms\n"
      "graceful_timeout: 2m\napp:\n  verbose: yes\n",
      {"--host= 127.0.0.1 "});
  CHECK(config.string("log_file") == "/tmp/x.log");
  CHECK(config.bytes("max_line") == 64 * 1024);
  CHECK(config.bytes("max_output") == 2 * 1024 * 1024);
  CHECK(config.seconds("timeout") == Approx(0.5));
  CHECK(config.seconds("graceful_timeout") == Approx(120));
  CHECK(config.boolean("app.verbose"));
  CHECK(config.string("host") == "127.0.0.1");
}

TEST_CASE("listen takes a YAML list or a comma list and repeats accumulate", "[config]") {
  Fixture f;
  CHECK_THAT(f.load("listen: [\"127.0.0.1:8000\", \"[::1]:8000\"]\n").list("listen"),
             Equals(std::vector<std::string>{"127.0.0.1:8000", "[::1]:8000"}));
  CHECK_THAT(f.load("", {"--listen=127.0.0.1:1, unix:/tmp/s"}).list("listen"),
             Equals(std::vector<std::string>{"127.0.0.1:1", "unix:/tmp/s"}));
  // A command-line value is never YAML: a leading '[' is an IPv6 address (issue 9, defect 4).
  CHECK_THAT(f.load("", {"--listen=[::1]:2"}).list("listen"), Equals(std::vector<std::string>{"[::1]:2"}));
  CHECK_THAT(f.load("", {"--listen=[::]:8000,[::1]:3"}).list("listen"),
             Equals(std::vector<std::string>{"[::]:8000", "[::1]:3"}));
  CHECK_THAT(f.error_of("", {"--cidr_allow=[::1]"}), Contains("\"[::1]\" is not an IPv4 or IPv6 address"));
  CHECK_THAT(f.load("listen: [\"x:1\"]\n", {"--listen=127.0.0.1:1", "--listen=127.0.0.1:2"}).list("listen"),
             Equals(std::vector<std::string>{"127.0.0.1:1", "127.0.0.1:2"}));
}

TEST_CASE("an unknown key names file and line and column and the nearest key", "[config][errors]") {
  Fixture f;
  CHECK(f.error_of("port: 1\nprot: 9000\n") == f.file() + ":2:1: unknown key 'prot'; did you mean 'port'?");
  CHECK(f.error_of("app:\n  wrokers: 3\n") == f.file() + ":2:3: unknown key 'app.wrokers'; did you mean 'app.workers'?");
  CHECK(f.error_of("ap:\n  workers: 3\n") == f.file() + ":1:1: unknown key 'ap'; did you mean 'app'?");
  CHECK(f.error_of("zzzzzzzz: 1\n") == f.file() + ":1:1: unknown key 'zzzzzzzz'");
}

TEST_CASE("a wrong type or range shows the value and what is valid", "[config][errors]") {
  Fixture f;
  CHECK(f.error_of("port: abc\n") == f.file() + ":1:7: port: expected an integer from 0 to 65535, got \"abc\"");
  CHECK(f.error_of("port: 70000\n") == f.file() + ":1:7: port: expected an integer from 0 to 65535, got 70000");
  CHECK(f.error_of("log_level: 7\n") == f.file() + ":1:12: log_level: expected an integer from 0 to 4, got 7");
  CHECK_THAT(f.error_of("max_line: lots\n"), Contains("max_line: expected a size in bytes") && Contains("\"lots\""));
  CHECK_THAT(f.error_of("port: [1, 2]\n"), Contains(":1:7: port: expected an integer") && Contains("got a list"));
  CHECK_THAT(f.error_of("port:\n"), Contains("port: expected an integer") && Contains("got nothing"));
  CHECK_THAT(f.error_of("app: 3\n"), Contains(":1:6: app: expected a mapping of app options"));
}

TEST_CASE("an unknown personality lists the valid ones", "[config][errors]") {
  Fixture f;
  const std::string error = f.error_of("personality: prefrk\n");
  CHECK_THAT(error, Contains(f.file() + ":1:14: personality: expected one of: "));
  CHECK_THAT(error, Contains("single") && Contains("got \"prefrk\""));
}

TEST_CASE("a bad listen address says what is wrong with it", "[config][errors]") {
  Fixture f;
  CHECK_THAT(f.error_of("listen: [\"::1:80\"]\n"), Contains("listen: \"::1:80\": an IPv6 address needs brackets"));
  CHECK_THAT(f.error_of("listen: [\"127.0.0.1:http\"]\n"), Contains("port must be a number from 0 to 65535"));
  CHECK_THAT(f.error_of("", {"--listen=unix:"}), Contains("command line: --listen=unix:: \"unix:\": a unix socket needs a path"));
}

TEST_CASE("a missing file or a YAML syntax error or a duplicate key is reported", "[config][errors]") {
  Fixture f;
  const std::vector<const char*> argv{"test", "--config", "/nonexistent/netserver.yaml"};
  const CommandLine command_line = CommandLine::parse(3, argv.data(), f.server.options());
  CHECK_THROWS_WITH(Config::load(f.server.options(), command_line),
                    "cannot read config file '/nonexistent/netserver.yaml': No such file or directory");
  CHECK_THAT(f.error_of("port: 1\nlisten: [\"a:1\"\n"), Contains(f.file() + ":3:1: YAML syntax error: "));
  CHECK(f.error_of("port: 1\nport: 2\n") == f.file() + ":2:1: duplicate key 'port' (first set at line 1)");
  CHECK_THAT(f.error_of("- port\n"), Contains(":1:1: expected a mapping of keys to values"));
}

TEST_CASE("a key set both dotted and in its block is a duplicate", "[config][errors][hardening]") {
  Fixture f;
  CHECK(f.error_of("app.workers: 10\napp:\n  workers: 20\n") ==
        f.file() + ":3:3: duplicate key 'app.workers' (first set at line 1)");
  CHECK(f.error_of("app:\n  workers: 20\napp.workers: 10\n") ==
        f.file() + ":3:1: duplicate key 'app.workers' (first set at line 2)");
  CHECK(f.load("app.workers: 10\napp:\n  verbose: true\n").integer("app.workers") == 10);
}

TEST_CASE("an unquoted value starting with a YAML indicator gets a hint to quote it", "[config][errors][hardening]") {
  Fixture f;
  CHECK(f.error_of("port: 1\nhost: *\n") ==
        f.file() + ":2:8: YAML syntax error: alias not found after * (a value starting with '*' is YAML syntax: "
                   "if * is meant as text, quote it: \"*\")");
  CHECK_THAT(f.error_of("listen:\n  - *:8000\n"), Contains("quote it: \"*:8000\""));
  CHECK_THAT(f.error_of("listen:\n  - [::1]:8000   # v6\n"), Contains("quote it: \"[::1]:8000\""));
  CHECK_THAT(f.error_of("listen: [::1]:8000\n"), Contains("quote it: \"[::1]:8000\""));
  CHECK_THAT(f.error_of("port: 1\nlisten: [\"a:1\"\n"), !Contains("quote it"));  // an unclosed list is not text
  // A flow list: each entry quoted, not the whole list (which would be one address).
  CHECK_THAT(f.error_of("listen: [tls://[::]:8443, 127.0.0.1:8000]\n"),
             Contains("quote each entry: [\"tls://[::]:8443\", \"127.0.0.1:8000\"])"));
  CHECK_THAT(f.load("listen: [\"tls://[::]:8443\", \"127.0.0.1:8000\"]\n").list("listen"),
             Equals(std::vector<std::string>{"tls://[::]:8443", "127.0.0.1:8000"}));
  CHECK_THAT(f.load("host: \"*\"\nlisten:\n  - \"[::1]:8000\"\n").list("listen"),
             Equals(std::vector<std::string>{"[::1]:8000"}));
}

TEST_CASE("the config option needs a file and not a directory", "[config][errors][hardening]") {
  Fixture f;
  CHECK(f.error_of("", {"--config="}) == "command line: --config=: needs a file name (--config=FILE) (see --help)");
  CHECK_THAT(f.error_of("", {"--config", f.dir.path().string()}),
             Contains("cannot read config file '" + f.dir.path().string() + "': it is a directory"));
}

TEST_CASE("command-line errors name the argument", "[config][errors]") {
  Fixture f;
  CHECK(f.error_of("", {"--prot=9000"}) == "command line: --prot=9000: unknown key 'prot'; did you mean 'port'? (see --help)");
  CHECK(f.error_of("", {"--port=x"}) == "command line: --port=x: expected an integer from 0 to 65535, got \"x\"");
  CHECK_THAT(f.error_of("", {"--app=1"}), Contains("'app' is a block; set its keys as --app.KEY=VALUE"));
  CHECK_THAT(f.error_of("", {"stray"}), Contains("command line: stray: unexpected argument"));
  CHECK_THAT(f.error_of("", {"--port"}), Contains("command line: --port: needs a value"));
}

TEST_CASE("dump is YAML that loads back to the same configuration", "[config]") {
  Fixture f;
  const Config first = f.load("port: 9000\nlisten: [\"127.0.0.1:1\", \"unix:/tmp/a b\"]\nlog_file: \"a: b\"\n",
                              {"--timeout=1.5", "--app.workers=9"});
  const std::string dump = first.dump();
  CHECK_THAT(dump, Contains("port: 9000  # " + f.file() + ":1:7"));
  CHECK_THAT(dump, Contains("timeout: 1.5  # command line --timeout=1.5"));
  CHECK_THAT(dump, Contains("app:\n  workers: 9  # command line --app.workers=9\n"));
  const Config second = f.load(dump);
  for (const Option& option : f.server.options().all()) {
    INFO(option.key);
    CHECK(second.value(option.key) == first.value(option.key));
  }
}

// A `records` key (tls.certificates): a list of mappings whose fields the option names, each entry
// remembering where it was written; the command line takes the same list as YAML flow text.
TEST_CASE("a list of mappings loads with its fields and each entry's place", "[config]") {
  Fixture f;
  const Config config = f.load("tls:\n  certificates:\n    - cert_file: a.pem\n      key_file: a.key\n"
                               "    - {cert_file: b.pem, listen: [tls://127.0.0.1:1, tls://127.0.0.1:2]}\n");
  const std::vector<Record>& entries = config.records("tls.certificates");
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].text("cert_file") == "a.pem");
  CHECK(entries[0].text("key_file") == "a.key");
  CHECK(entries[0].text("listen").empty());
  CHECK(entries[0].where == f.file() + ":3:7");
  CHECK(entries[1].fields.at("listen") == std::vector<std::string>{"tls://127.0.0.1:1", "tls://127.0.0.1:2"});
  CHECK(entries[1].where == f.file() + ":5:7");
  CHECK(config.origin("tls.certificates").where == f.file() + ":3:5");

  const Config cli = f.load("", {"--tls.certificates=[{cert_file: c.pem, key_file: c.key}]"});
  REQUIRE(cli.records("tls.certificates").size() == 1);
  CHECK(cli.records("tls.certificates")[0].text("key_file") == "c.key");
  CHECK(cli.records("tls.certificates")[0].where.empty());

  CHECK_THAT(f.error_of("tls:\n  certificates:\n    - {cert_file: a.pem, kee_file: a.key}\n"),
             Contains(f.file() + ":3:26: tls.certificates: unknown field 'kee_file'") && Contains("cert_file, key_file, listen"));
  CHECK_THAT(f.error_of("tls:\n  certificates:\n    - a.pem\n"), Contains(f.file() + ":3:7: tls.certificates: expected"));
  CHECK_THAT(f.error_of("tls:\n  certificates:\n    - {key_file: a.key}\n"), Contains("an entry without cert_file"));
  CHECK_THAT(f.error_of("tls:\n  certificates:\n    - {cert_file: {x: 1}}\n"), Contains("field 'cert_file': expected a text"));
  CHECK_THAT(f.error_of("", {"--tls.certificates=[{cert_file: a.pem"}), Contains("command line: --tls.certificates=") && Contains("YAML flow style"));
}

TEST_CASE("a list of mappings dumps to YAML that loads back", "[config]") {
  Fixture f;
  const Config config = f.load("tls:\n  certificates:\n    - {cert_file: \"a b.pem\", key_file: a.key}\n    - {cert_file: b.pem}\n");
  const std::string dumped = config.dump();
  CHECK_THAT(dumped, Contains("certificates: [{cert_file: "));
  const Config again = f.load(dumped);
  REQUIRE(again.records("tls.certificates").size() == 2);
  CHECK(again.records("tls.certificates")[0].text("cert_file") == "a b.pem");
  CHECK(again.records("tls.certificates")[0].text("key_file") == "a.key");
  CHECK(again.records("tls.certificates")[1].text("cert_file") == "b.pem");
}

TEST_CASE("listen addresses parse into their parts", "[config][listen]") {
  ListenAddress a;
  std::string problem;
  REQUIRE(ListenAddress::parse("127.0.0.1:8000", a, problem));
  CHECK((a.kind == ListenAddress::Kind::tcp && a.host == "127.0.0.1" && a.port == 8000));
  REQUIRE(ListenAddress::parse("[::1]:9", a, problem));
  CHECK((a.host == "::1" && a.port == 9 && a.text() == "[::1]:9"));
  REQUIRE(ListenAddress::parse("*:0", a, problem));
  CHECK(a.host == "*");
  REQUIRE(ListenAddress::parse("8080", a, problem));
  CHECK((a.host == "*" && a.port == 8080));
  REQUIRE(ListenAddress::parse("unix:/run/x.sock", a, problem));
  CHECK((a.kind == ListenAddress::Kind::unix_socket && a.path == "/run/x.sock"));
  CHECK_FALSE(ListenAddress::parse("[::1]8000", a, problem));
  CHECK_FALSE(ListenAddress::parse("host:99999", a, problem));
  CHECK_FALSE(ListenAddress::parse("bad host:1", a, problem));
}
