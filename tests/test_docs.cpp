// The docs tested like code (issue 27): README.md and docs/*.md are read as a user would follow
// them, and every sample in them is run against the real binaries. The fences' info strings say
// what a sample is (docs/README.md, "Keeping these pages true"):
//   ```yaml                loaded with `echo_server --check-config`: must load
//   ```yaml fails          must fail with exit status 2; the plain ``` block right after it holds
//                          the lines it prints (a first line `# NAME.yaml` names the file)
//   ```console             each `$ SERVER ARGS...` line is run; it must print the lines below it
//   ```ini                 with a systemd section: must pass `systemd-analyze verify` silently
//   ```cpp                 a complete program: built by tests/CMakeLists.txt, started and greeted
//   ```cpp fragment        compiled after docs/samples/fragment_prelude.hpp
//   ```cpp excerpt=PATH    must appear verbatim in PATH (which the build compiles)
//   ```haproxy             must pass `haproxy -c` without a warning
// Links: every relative link must name a file inside the repository, and its #anchor a heading
// of that file; docs/README.md links every page of docs/.
// Prose: every key named (`--key=value`, `key: value`, `block.key`) is one of configuration.md or
// of a demo's --help; a log line shown in a block, or a client error, pool line or bind error
// quoted in `code`, must be printed by the binaries in the situation the docs describe (numbers,
// addresses and the placeholders N, <what> and ... stand for any value).
// The README's commands: the build-tree lines start the demos, `scripts/demo ...` names a demo
// and its arguments load, `netbench pids` prints the table and summary fields shown.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>

#include "harness.hpp"

namespace fs = std::filesystem;
using namespace harness;
using Catch::Matchers::Contains;

namespace {

const fs::path source_dir = NETSERVER_SOURCE_DIR;

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> words;
  std::istringstream in(text);
  for (std::string word; in >> word;) words.push_back(word);
  return words;
}

// The pages a user reads: the README and every guide in docs/.
std::vector<fs::path> pages() {
  std::vector<fs::path> out{source_dir / "README.md"};
  for (const auto& entry : fs::directory_iterator(source_dir / "docs"))
    if (entry.path().extension() == ".md") out.push_back(entry.path());
  std::sort(out.begin() + 1, out.end());
  return out;
}

std::string shown(const fs::path& page) { return fs::relative(page, source_dir).string(); }

// One fenced block: where it is, its info string split into words, its text.
struct Block {
  fs::path page;
  int line = 0;  // of the opening fence, from 1
  std::vector<std::string> info;
  std::string text;

  std::string kind() const { return info.empty() ? "" : info.front(); }
  bool has(const std::string& word) const { return std::find(info.begin(), info.end(), word) != info.end(); }
  std::string option(const std::string& name) const {
    for (const std::string& word : info)
      if (word.starts_with(name + "=")) return word.substr(name.size() + 1);
    return "";
  }
  std::string where() const { return shown(page) + ":" + std::to_string(line); }
};

std::vector<Block> blocks_of(const fs::path& page) {
  std::vector<Block> blocks;
  const std::vector<std::string> lines = lines_of(read_text(page));
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (!lines[i].starts_with("```")) continue;
    Block block{page, static_cast<int>(i + 1), words_of(lines[i].substr(3)), ""};
    std::size_t j = i + 1;
    for (; j < lines.size() && !lines[j].starts_with("```"); ++j) block.text += lines[j] + "\n";
    if (j == lines.size()) throw std::runtime_error(block.where() + ": a fence that is never closed");
    blocks.push_back(block);
    i = j;
  }
  return blocks;
}

std::vector<Block> all_blocks() {
  std::vector<Block> out;
  for (const fs::path& page : pages())
    for (Block& block : blocks_of(page)) out.push_back(std::move(block));
  return out;
}

std::string trim(std::string text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  std::size_t start = 0;
  while (start < text.size() && std::isspace(static_cast<unsigned char>(text[start]))) ++start;
  return text.substr(start);
}

void replace_all(std::string& text, const std::string& from, const std::string& to) {
  for (std::size_t at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
    text.replace(at, from.size(), to);
}

// The file name a YAML sample is shown as: `# NAME.yaml` on its first line, else app.yaml.
std::string yaml_name(const std::string& sample) {
  static const std::regex named(R"(^#\s*([A-Za-z0-9_.-]+\.yaml)\b)");
  std::smatch match;
  const std::string first = sample.substr(0, sample.find('\n'));
  return std::regex_search(first, match, named) ? match[1].str() : "app.yaml";
}

// A sample written for a real machine names its places (/run/NAME/pid, /var/log/NAME.log), which
// --check-config checks as the start would: they are moved into `root`, their directories made.
std::string rooted(const std::string& sample, const fs::path& root) {
  static const std::regex place(R"((/run|/var/run|/var/log)/[A-Za-z0-9_./-]+)");
  std::string out;
  std::size_t done = 0;
  for (auto it = std::sregex_iterator(sample.begin(), sample.end(), place); it != std::sregex_iterator(); ++it) {
    const fs::path moved = root.string() + it->str();
    fs::create_directories(moved.parent_path());
    out += sample.substr(done, static_cast<std::size_t>(it->position()) - done) + moved.string();
    done = static_cast<std::size_t>(it->position() + it->length());
  }
  return out + sample.substr(done);
}

std::string server_for(const Block& block) {
  const std::string named = block.option("binary");
  return named.empty() ? "echo_server" : named;
}

}  // namespace

TEST_CASE("every YAML sample loads with --check-config or fails with the error it shows", "[docs]") {
  const std::vector<Block> blocks = all_blocks();
  std::size_t loaded = 0, failed = 0;
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    const Block& block = blocks[i];
    if (block.kind() != "yaml") continue;
    INFO("the YAML sample at " << block.where() << ":\n" << block.text);
    TempDir dir;
    const std::string name = yaml_name(block.text);
    const fs::path file = dir.write(name, rooted(block.text, dir.path() / "root"));
    Outcome outcome = run(binary(server_for(block)), {"--config", file.string(), "--check-config"});
    replace_all(outcome.output, (dir.path() / "root").string(), "");
    replace_all(outcome.output, (dir.path() / "").string(), "");
    INFO("exit status " << outcome.status << ", output:\n" << outcome.output);
    if (!block.has("fails")) {
      CHECK(outcome.status == 0);
      CHECK_THAT(outcome.output, Contains("# configuration OK"));
      ++loaded;
      continue;
    }
    ++failed;
    CHECK(outcome.status == 2);
    const bool shows_error = i + 1 < blocks.size() && blocks[i + 1].page == block.page && blocks[i + 1].info.empty();
    REQUIRE(shows_error);  // a failing sample shows what it prints, in a plain block after it
    const std::vector<std::string> printed = lines_of(outcome.output);
    for (const std::string& expected : lines_of(trim(blocks[i + 1].text))) {
      INFO("the error shown at " << blocks[i + 1].where() << ": " << expected);
      CHECK(std::find(printed.begin(), printed.end(), expected) != printed.end());
    }
  }
  CHECK(loaded >= 5);  // the guides' samples were found at all
  CHECK(failed >= 2);
}

TEST_CASE("every console transcript of a server prints what it shows", "[docs]") {
  static const std::set<std::string> servers{"echo_server", "chat_server", "guess_server"};
  std::size_t commands = 0;
  for (const Block& block : all_blocks()) {
    if (block.kind() != "console") continue;
    const std::vector<std::string> lines = lines_of(block.text);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (!lines[i].starts_with("$ ")) continue;
      INFO("the command at " << block.where() << ": " << lines[i]);
      std::vector<std::string> words = words_of(lines[i].substr(2));
      REQUIRE(servers.count(words.front()) == 1);  // only the project's servers, run without a shell
      REQUIRE(lines[i].find_first_of("|<>&;$`'\"\\", 2) == std::string::npos);
      std::string expected;
      for (std::size_t j = i + 1; j < lines.size() && !lines[j].starts_with("$ "); ++j) expected += lines[j] + "\n";
      const std::string program = binary(words.front());
      words.erase(words.begin());
      const Outcome outcome = run(program, words);
      CHECK(trim(outcome.output) == trim(expected));
      ++commands;
    }
  }
  CHECK(commands >= 2);
}

namespace {

bool is_systemd_unit(const Block& block) {
  static const std::regex section(R"((^|\n)\[(Unit|Service|Socket|Install|Timer|Path|Mount)\]\n)");
  return block.kind() == "ini" && std::regex_search(block.text, section);
}

std::string unit_suffix(const std::string& text) {
  for (const char* type : {"Socket", "Timer", "Path", "Mount"})
    if (text.find(std::string("[") + type + "]") != std::string::npos) {
      std::string suffix = std::string(".") + type;
      suffix[1] = static_cast<char>(std::tolower(suffix[1]));
      return suffix;
    }
  return ".service";
}

// Points every Exec*= program that does not exist here (/usr/bin/chat_server: the installed
// demo) at a stub in `dir`, so that verify checks the unit's syntax, not this machine's files.
std::string with_stub_programs(std::string unit, const TempDir& dir) {
  static const std::regex exec(R"((^|\n)(Exec[A-Za-z]*=)([-@:+!]*)(/[^ \n]+))");
  std::string out;
  std::smatch match;
  std::string rest = unit;
  while (std::regex_search(rest, match, exec)) {
    std::string program = match[4].str();
    if (!fs::exists(program)) {
      const fs::path stub = dir.path() / "bin" / fs::path(program).filename();
      fs::create_directories(stub.parent_path());
      if (!fs::exists(stub)) {
        dir.write("bin/" + stub.filename().string(), "#!/bin/sh\n");
        fs::permissions(stub, fs::perms::owner_all);
      }
      program = stub.string();
    }
    out += match.prefix().str() + match[1].str() + match[2].str() + match[3].str() + program;
    rest = match.suffix().str();
  }
  return out + rest;
}

// systemd-analyze verify on the files, in one run: rc 0 and not a word of output.
void verify_units(const std::vector<fs::path>& units, const std::string& what) {
  std::vector<std::string> args{"verify", "--man=no"};
  for (const fs::path& unit : units) args.push_back(unit.string());
  const Outcome outcome = run("/usr/bin/systemd-analyze", args, 60s);
  INFO(what << ": systemd-analyze verify said (status " << outcome.status << "):\n" << outcome.output);
  CHECK(outcome.status == 0);
  CHECK(trim(outcome.output).empty());
}

}  // namespace

TEST_CASE("every systemd snippet and the shipped units pass systemd-analyze verify", "[docs]") {
  if (!fs::exists("/usr/bin/systemd-analyze")) {
    WARN("SKIPPED: /usr/bin/systemd-analyze is missing (Debian package systemd): the units are not verified");
    return;
  }
  std::size_t snippets = 0;
  for (const Block& block : all_blocks()) {
    if (!is_systemd_unit(block)) continue;
    TempDir dir;
    const fs::path unit = dir.write("docs-snippet" + unit_suffix(block.text), with_stub_programs(block.text, dir));
    verify_units({unit}, "the unit at " + block.where());
    ++snippets;
  }
  CHECK(snippets >= 1);
  TempDir dir;
  std::vector<fs::path> shipped;
  for (const auto& entry : fs::directory_iterator(source_dir / "conf"))
    if (entry.path().extension() == ".service" || entry.path().extension() == ".socket")
      shipped.push_back(dir.write(entry.path().filename().string(), with_stub_programs(read_text(entry.path()), dir)));
  CHECK(shipped.size() >= 3);
  verify_units(shipped, "the units in conf/");
}

namespace {

// The compiler line of a program using netserver, as the build has it (tests/CMakeLists.txt).
std::vector<std::string> compile_command() {
  std::vector<std::string> command{NETSERVER_CXX_COMPILER, "-std=c++20", "-fsyntax-only", "-Wall", "-Wextra"};
  for (const std::string& dir : lines_of(read_text(NETSERVER_DOCS_SAMPLE_INCLUDES)))
    if (!dir.empty()) command.push_back("-I" + dir);
  for (const std::string& definition : lines_of(read_text(NETSERVER_DOCS_SAMPLE_DEFINITIONS)))
    if (!definition.empty()) command.push_back("-D" + definition);
  return command;
}

}  // namespace

// The build target of a complete program of the docs (tests/CMakeLists.txt names them alike).
std::string program_of(const Block& block) {
  std::string stem;
  for (const char c : shown(block.page)) stem += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return "docs_sample_" + stem + "_" + std::to_string(block.line);
}

TEST_CASE("every C++ sample compiles or is an excerpt of a compiled file", "[docs]") {
  const std::vector<std::string> base = compile_command();
  std::size_t programs = 0, fragments = 0, excerpts = 0;
  for (const Block& block : all_blocks()) {
    if (block.kind() != "cpp") continue;
    INFO("the C++ sample at " << block.where() << ":\n" << block.text);
    if (const std::string file = block.option("excerpt"); !file.empty()) {
      CHECK_THAT(read_text(source_dir / file), Contains(block.text));
      ++excerpts;
      continue;
    }
    if (!block.has("fragment")) {  // a whole program: the build compiled and linked it
      CHECK_THAT(block.text, Contains("int main("));
      CHECK_NOTHROW(binary(program_of(block)));
      ++programs;
      continue;
    }
    TempDir dir;
    const std::string unit = "#include \"" + (source_dir / "docs/samples/fragment_prelude.hpp").string() + "\"\n#line " +
                             std::to_string(block.line + 1) + " \"" + shown(block.page) + "\"\n" + block.text;
    std::vector<std::string> args(base.begin() + 1, base.end());
    args.push_back(dir.write("sample.cpp", unit).string());
    const Outcome outcome = run(base.front(), args, 180s);
    INFO("the compiler said:\n" << outcome.output);
    CHECK(outcome.status == 0);
    ++fragments;
  }
  CHECK(programs >= 2);
  CHECK(fragments >= 2);
  CHECK(excerpts >= 3);
}

TEST_CASE("every complete program of the docs starts and greets a client", "[docs]") {
  std::size_t served = 0;
  for (const Block& block : all_blocks()) {
    if (block.kind() != "cpp" || block.has("fragment") || !block.option("excerpt").empty()) continue;
    INFO("the program at " << block.where() << " (" << program_of(block) << ")");
    ServerProcess server(binary(program_of(block)), "host: 127.0.0.1\nport: 0\nlog_level: 3\n");
    {
      Client client(server.port());
      const std::optional<std::string> greeting = client.read_line();
      REQUIRE(greeting.has_value());
      CHECK(!greeting->empty());
    }
    CHECK(server.wait_for_log("closed 127.0.0.1:"));
    CHECK(server.stop() == 0);
    ++served;
  }
  CHECK(served >= 2);
}

namespace {

// GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces to -.
std::string anchor_of(const std::string& heading) {
  std::string out;
  for (const char c : heading) {
    const auto byte = static_cast<unsigned char>(c);
    if (std::isalnum(byte) || c == '-' || c == '_' || byte >= 0x80) out += static_cast<char>(std::tolower(byte));
    else if (c == ' ') out += '-';
  }
  return out;
}

std::set<std::string> anchors_of(const fs::path& page) {
  std::set<std::string> anchors;
  std::map<std::string, int> seen;
  bool in_fence = false;
  for (const std::string& line : lines_of(read_text(page))) {
    if (line.starts_with("```")) in_fence = !in_fence;
    if (in_fence || !line.starts_with("#")) continue;
    const std::size_t text = line.find_first_not_of('#');
    if (text == std::string::npos || line[text] != ' ') continue;
    const std::string anchor = anchor_of(trim(line.substr(text)));
    const int count = seen[anchor]++;
    anchors.insert(count == 0 ? anchor : anchor + "-" + std::to_string(count));
  }
  return anchors;
}

struct Link {
  int line;
  std::string target;
};

// [text](target) outside code: fenced blocks and `spans` are skipped.
std::vector<Link> links_of(const fs::path& page) {
  static const std::regex link(R"(\]\(([^()\s]+)\))");
  std::vector<Link> links;
  bool in_fence = false;
  int number = 0;
  for (std::string line : lines_of(read_text(page))) {
    ++number;
    if (line.starts_with("```")) in_fence = !in_fence;
    if (in_fence) continue;
    line = std::regex_replace(line, std::regex("`[^`]*`"), "");
    for (auto it = std::sregex_iterator(line.begin(), line.end(), link); it != std::sregex_iterator(); ++it)
      links.push_back({number, (*it)[1].str()});
  }
  return links;
}

}  // namespace

TEST_CASE("every relative link and anchor in the README and docs and CHANGELOG resolves inside the repository", "[docs]") {
  const fs::path root = fs::weakly_canonical(source_dir);
  std::size_t checked = 0;
  std::vector<fs::path> linking = pages();
  linking.push_back(source_dir / "CHANGELOG.md");  // its entries link the guides too
  for (const fs::path& page : linking) {
    for (const Link& link : links_of(page)) {
      if (link.target.starts_with("https://") || link.target.starts_with("http://") ||
          link.target.starts_with("mailto:"))
        continue;
      INFO(shown(page) << ":" << link.line << ": the link (" << link.target << ")");
      const std::size_t hash = link.target.find('#');
      const std::string path = link.target.substr(0, hash);
      const fs::path target = path.empty() ? page : fs::weakly_canonical(page.parent_path() / path);
      const std::string inside = fs::relative(target, root).string();
      CHECK((!inside.starts_with("..") && !inside.empty()));  // no link leaves the repository
      CHECK(fs::exists(target));
      if (hash != std::string::npos && fs::exists(target) && target.extension() == ".md") {
        const std::set<std::string> anchors = anchors_of(target);
        INFO("the headings' anchors there: " << Catch::Detail::stringify(std::vector<std::string>(anchors.begin(), anchors.end())));
        CHECK(anchors.count(link.target.substr(hash + 1)) == 1);
      }
      ++checked;
    }
  }
  CHECK(checked >= 30);
}

TEST_CASE("the README is a front page of at most 350 lines", "[docs]") {
  const std::string readme = read_text(source_dir / "README.md");
  CHECK(lines_of(readme).size() <= 350);
  // The two commands, exactly as CI runs them (.ci/run calls scripts/test).
  CHECK_THAT(readme, Contains("\nscripts/demo     # builds and runs the chat demo"));
  CHECK_THAT(readme, Contains("\nscripts/test     # builds everything and runs every test"));
  CHECK_THAT(read_text(source_dir / ".ci" / "run"), Contains("\nscripts/test\n"));
}

namespace {

// The personalities the binary accepts, from its own error for a name it does not know.
std::set<std::string> personalities_of_the_binary() {
  const Outcome outcome = run(binary("echo_server"), {"--personality=no-such-personality", "--check-config"});
  static const std::regex list(R"(expected one of: ([a-z, ]+), got)");
  std::smatch match;
  if (!std::regex_search(outcome.output, match, list)) throw std::runtime_error("no list in: " + outcome.output);
  std::set<std::string> names;
  std::string text = match[1].str();
  replace_all(text, ",", " ");
  for (const std::string& name : words_of(text)) names.insert(name);
  return names;
}

// The names of a table's first column (| `name` | ...) under `heading` in a page.
std::set<std::string> first_column(const fs::path& page, const std::string& heading) {
  std::set<std::string> names;
  const std::string text = read_text(page);
  const std::size_t start = heading.empty() ? 0 : text.find("\n" + heading + "\n");
  if (start == std::string::npos) throw std::runtime_error(shown(page) + " has no heading " + heading);
  static const std::regex row(R"(^\| `([a-z_]+)`)");
  bool in_table = false;
  for (const std::string& line : lines_of(text.substr(start + 1))) {
    std::smatch match;
    if (std::regex_search(line, match, row)) names.insert(match[1].str());
    if (line.starts_with("|")) in_table = true;
    else if (in_table) break;  // the first table under the heading only
  }
  return names;
}

}  // namespace

TEST_CASE("the personalities listed in the docs are the binary's", "[docs]") {
  const std::set<std::string> binary_list = personalities_of_the_binary();
  CHECK(binary_list.size() >= 4);
  CHECK(first_column(source_dir / "docs/personalities.md", "") == binary_list);
  CHECK(first_column(source_dir / "docs/configuration.md", "## Personalities") == binary_list);
  // Every personality has its section in the guide.
  const std::set<std::string> anchors = anchors_of(source_dir / "docs/personalities.md");
  for (const std::string& name : binary_list) {
    INFO("docs/personalities.md has no section ## " << name);
    CHECK(anchors.count(name) == 1);
  }
}
TEST_CASE("every HAProxy configuration of the docs passes haproxy -c without a warning", "[docs]") {
  const std::string haproxy = "/usr/sbin/haproxy";
  if (!fs::exists(haproxy)) {
    WARN("SKIPPED: " << haproxy << " is missing (Debian package haproxy): the HAProxy samples are not checked");
    return;
  }
  static const std::regex section(R"((^|\n)(frontend|backend|listen|defaults)( |\n))");
  std::size_t checked = 0;
  for (const Block& block : all_blocks()) {
    INFO("the block at " << block.where() << ":\n" << block.text);
    if (block.kind() != "haproxy") {
      CHECK_FALSE((block.kind().empty() && std::regex_search(block.text, section)));  // unmarked: never checked
      continue;
    }
    TempDir dir;
    const Outcome outcome = run(haproxy, {"-c", "-f", dir.write("haproxy.cfg", block.text).string()});
    INFO("haproxy -c said (status " << outcome.status << "):\n" << outcome.output);
    CHECK(outcome.status == 0);
    CHECK(outcome.output.find("[WARNING]") == std::string::npos);
    CHECK(outcome.output.find("[ALERT]") == std::string::npos);
    ++checked;
  }
  CHECK(checked >= 1);
}

TEST_CASE("docs/README.md links every page of docs/", "[docs]") {
  const fs::path index = source_dir / "docs" / "README.md";
  std::set<fs::path> linked;
  for (const Link& link : links_of(index)) {
    const std::string path = link.target.substr(0, link.target.find('#'));
    if (!path.empty() && path.find("://") == std::string::npos)
      linked.insert(fs::weakly_canonical(index.parent_path() / path));
  }
  std::size_t pages_in_docs = 0;
  for (const fs::path& page : pages()) {
    if (page.parent_path() != source_dir / "docs" || page.filename() == "README.md") continue;
    INFO("docs/README.md has no link to " << shown(page));
    CHECK(linked.count(fs::weakly_canonical(page)) == 1);
    ++pages_in_docs;
  }
  CHECK(pages_in_docs >= 10);
}

namespace {

struct Span {
  fs::path page;
  int line;
  std::string text;
  std::string where() const { return shown(page) + ":" + std::to_string(line); }
};

// The `code spans` of the prose (not of fenced blocks), each within one line.
std::vector<Span> spans_of(const fs::path& page) {
  static const std::regex span("`([^`]+)`");
  std::vector<Span> spans;
  bool in_fence = false;
  int number = 0;
  for (const std::string& line : lines_of(read_text(page))) {
    ++number;
    if (line.starts_with("```")) in_fence = !in_fence;
    if (in_fence || line.starts_with("```")) continue;
    for (auto it = std::sregex_iterator(line.begin(), line.end(), span); it != std::sregex_iterator(); ++it)
      spans.push_back({page, number, (*it)[1].str()});
  }
  return spans;
}

std::vector<Span> all_spans() {
  std::vector<Span> out;
  for (const fs::path& page : pages())
    for (Span& span : spans_of(page)) out.push_back(std::move(span));
  return out;
}

// The keys of the reference's tables (| key | accepts | ...), core keys and blocks' dotted keys.
std::set<std::string> reference_keys() {
  static const std::regex row(R"(^\| `([a-z0-9_.]+)` \|)");
  std::set<std::string> keys;
  bool in_key_table = false;
  for (const std::string& line : lines_of(read_text(source_dir / "docs/configuration.md"))) {
    if (line.starts_with("| key |")) in_key_table = true;
    else if (!line.starts_with("|")) in_key_table = false;
    std::smatch match;
    if (in_key_table && std::regex_search(line, match, row)) keys.insert(match[1].str());
  }
  return keys;
}

// The keys a demo's --help lists (the reference's, and the demo's own: echo's `style`, ...).
std::set<std::string> help_keys(const std::string& server) {
  static const std::regex row(R"(^  ([a-z][a-z0-9_.]*)  )");
  std::set<std::string> keys;
  for (const std::string& line : lines_of(run(binary(server), {"--help"}).output)) {
    std::smatch match;
    if (std::regex_search(line, match, row)) keys.insert(match[1].str());
  }
  return keys;
}

// Every identifier written in the project's code, scripts and build files.
std::set<std::string> identifiers_of_the_code() {
  static const std::regex identifier("[A-Za-z_][A-Za-z0-9_]*");
  std::set<std::string> names;
  for (const char* folder : {"include", "src", "personalities", "examples", "bench", "fuzz", "scripts", "cmake", "docs/tutorial"})
    for (const auto& entry : fs::recursive_directory_iterator(source_dir / folder)) {
      const std::string ext = entry.path().extension().string();
      if (!entry.is_regular_file() || !(ext == ".cpp" || ext == ".hpp" || ext == ".h" || ext == ".txt" ||
                                        ext == ".cmake" || ext == ".in" || (ext.empty() && std::string(folder) == "scripts")))
        continue;
      names.insert(entry.path().stem().string());  // a file's name: a fuzz target, a demo
      const std::string text = read_text(entry.path());
      for (auto it = std::sregex_iterator(text.begin(), text.end(), identifier); it != std::sregex_iterator(); ++it)
        names.insert(it->str());
    }
  for (const char* file : {"CMakeLists.txt", "tests/CMakeLists.txt", "docs/CMakeLists.txt"}) {
    const std::string text = read_text(source_dir / file);
    for (auto it = std::sregex_iterator(text.begin(), text.end(), identifier); it != std::sregex_iterator(); ++it)
      names.insert(it->str());
  }
  return names;
}

// The groups of the test names (`docs: ...`, `integration: ...`), which read like `key: value`.
std::set<std::string> test_groups() {
  static const std::regex prefix(R"((TEST_PREFIX|NAME) "([a-z]+): )");
  std::set<std::string> groups;
  for (const char* file : {"tests/CMakeLists.txt", "docs/CMakeLists.txt"}) {
    const std::string text = read_text(source_dir / file);
    for (auto it = std::sregex_iterator(text.begin(), text.end(), prefix); it != std::sregex_iterator(); ++it)
      groups.insert((*it)[2].str());
  }
  return groups;
}

}  // namespace

TEST_CASE("every configuration key the docs name is in configuration.md or a demo's --help", "[docs]") {
  const std::set<std::string> reference = reference_keys();
  REQUIRE(reference.size() >= 40);
  std::set<std::string> keys = reference, inner, blocks;
  for (const char* server : {"echo_server", "chat_server", "guess_server"}) {
    const std::set<std::string> listed = help_keys(server);  // the demos' own keys too (echo's `style`)
    keys.insert(listed.begin(), listed.end());
  }
  for (const std::string& key : keys)
    if (const std::size_t dot = key.find('.'); dot != std::string::npos) {
      blocks.insert(key.substr(0, dot));
      inner.insert(key.substr(dot + 1));  // `max_servers: 20` inside the prefork block
    }
  const std::set<std::string> groups = test_groups();
  const std::set<std::string> code = identifiers_of_the_code();
  // Names from outside the project that the prose quotes: a TLS extension, an nginx module.
  const std::set<std::string> foreign{"status_request", "stream_core"};
  static const std::regex flag(R"(^--([a-z][a-z0-9_.-]*)=)");
  static const std::regex setting(R"(^([a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?): \S)");
  static const std::regex dotted(R"(^([a-z]+)\.([a-z][a-z0-9_]*))");
  static const std::regex snake(R"([a-z][a-z0-9]*(_[a-z0-9]+)+)");
  std::size_t checked = 0;
  for (const Span& span : all_spans()) {
    INFO(span.where() << ": `" << span.text << "`");
    std::smatch match;
    if (std::regex_search(span.text, match, flag)) {  // --key=value
      std::string name = match[1].str();
      std::replace(name.begin(), name.end(), '-', '_');
      if (name != "key" && name != "config") CHECK(keys.count(name) == 1);
      ++checked;
    } else if (std::regex_search(span.text, match, setting)) {  // key: value
      const std::string name = match[1].str();
      CHECK((keys.count(name) + inner.count(name) + groups.count(name) + (name == "error" || name == "key")) >= 1);
      ++checked;
    } else if (std::regex_search(span.text, match, dotted) && blocks.count(match[1].str()) == 1) {  // block.key
      CHECK(keys.count(match[1].str() + "." + match[2].str()) == 1);
      ++checked;
    } else if (std::regex_match(span.text, snake)) {  // a bare name: a key, or a name in the code
      CHECK((keys.count(span.text) + inner.count(span.text) + code.count(span.text) + foreign.count(span.text)) >= 1);
      ++checked;
    }
  }
  CHECK(checked >= 200);
}

namespace {

// A regular expression for a line quoted in the docs: what varies between runs matches any
// value -- numbers (pids, ports, sizes, versions), addresses, and the placeholders N, <what> and
// `...`; the rest must be exactly the binary's.
std::string pattern_of(const std::string& quoted) {
  static const std::regex address(R"(^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]*\]|\*):\d+)");
  static const std::regex number(R"(^\d+(\.\d+)*)");
  static const std::regex placeholder(R"(^(<[^>]+>|N\b|\.\.\.))");
  std::string out;
  for (std::size_t at = 0; at < quoted.size();) {
    const std::string rest = quoted.substr(at);
    std::smatch match;
    const bool word_start = at == 0 || !std::isalnum(static_cast<unsigned char>(quoted[at - 1]));
    if (std::regex_search(rest, match, address)) {
      out += R"((\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:.]*\]):\d+)";
    } else if (word_start && std::regex_search(rest, match, number)) {
      out += R"(\d+(\.\d+)*)";
    } else if (word_start && std::regex_search(rest, match, placeholder)) {
      out += match[1].str() == "N" ? R"(\d+)" : ".+";
    } else {
      const char c = quoted[at];
      if (std::strchr(R"(\^$.|?*+()[]{})", c) != nullptr) out += '\\';
      out += c;
      at += 1;
      continue;
    }
    at += match[0].length();
  }
  return out;
}

// A log line: [time] [level] [pid] message.
const std::regex log_line(R"(^\[[^\]]*\] \[(error|warning|notice|info|debug)\] \[\d+\] (.*)$)");

// What the docs quote as the binaries' words: the log lines in their blocks (and the echo demo's
// banner in its transcript), and in the prose the
// errors a client reads (`error: line too long`), the pool's lines (`TTIN: ...`, `child N
// killed ...`) and a failed bind's message.
struct Quote {
  std::string where;
  std::string text;
  bool is_log_line;
};

std::vector<Quote> quoted_output() {
  std::vector<Quote> quotes;
  for (const Block& block : all_blocks()) {
    const std::vector<std::string> lines = lines_of(block.text);
    for (std::size_t i = 0; i < lines.size(); ++i)
      if (std::regex_match(lines[i], log_line) || lines[i].starts_with("Welcome to \"echo\" (personality "))
        quotes.push_back({shown(block.page) + ":" + std::to_string(block.line + 1 + static_cast<int>(i)), lines[i],
                          std::regex_match(lines[i], log_line)});
  }
  for (const Span& span : all_spans())
    for (const char* opening : {"error: ", "TTIN: ", "TTOU: ", "cannot bind ", "child "})
      if (span.text.starts_with(opening)) quotes.push_back({span.where(), span.text, false});
  return quotes;
}

void read_into(std::string& corpus, Client& client, Seconds timeout = 5s) {
  corpus += client.read_all(timeout) + "\n";
}

// What the demos print in the situations the docs describe: a session of the README's echo
// demo, the client errors of the limits, a failed bind, and the pool's TTIN/TTOU lines.
std::string output_of_the_binaries() {
  std::string corpus;
  {
    ServerProcess echo(binary("echo_server"), "host: 127.0.0.1\nport: 0\nlog_level: 4\n");
    {
      Client client(echo.port());
      client.send("hello\r\nquit\r\n");
      read_into(corpus, client);
    }
    REQUIRE(echo.wait_for_log("closed 127.0.0.1:"));
    corpus += run(binary("echo_server"), {"--host=127.0.0.1", "--port=" + std::to_string(echo.port())}).output;
    CHECK(echo.stop() == 0);
    corpus += echo.log();
  }
  {
    ServerProcess limits(binary("echo_server"),
                         "personality: multiplex\nhost: 127.0.0.1\nport: 0\nlog_level: 4\nmax_line: 16\n"
                         "max_connections: 2\nmax_connections_per_ip: 1\ntimeout: 1\n");
    {
      Client first(limits.port());
      REQUIRE(first.read_line().has_value());
      Client same_address(limits.port());
      read_into(corpus, same_address);  // error: too many connections from your address
      Client second(limits.port(), "127.0.0.1", "127.0.0.2");
      REQUIRE(second.read_line().has_value());
      Client third(limits.port(), "127.0.0.1", "127.0.0.4");
      read_into(corpus, third);  // error: server busy
      first.send(std::string(40, 'x') + "\r\n");
      read_into(corpus, first);  // error: line too long
    }
    REQUIRE(limits.wait_for_log("line too long"));
    // error: timed out after 1 s without input (once the server has let go of the first two
    // clients: until then a newcomer is told the server is busy)
    for (int attempt = 0; attempt < 20 && corpus.find("error: timed out") == std::string::npos; ++attempt) {
      Client idle(limits.port(), "127.0.0.1", "127.0.0.3");
      read_into(corpus, idle, 4s);
    }
    CHECK(limits.stop() == 0);
    corpus += limits.log();
  }
  {
    ServerProcess pool(binary("echo_server"),
                       "personality: prefork\nhost: 127.0.0.1\nport: 0\nprefork:\n  min_servers: 1\n  max_servers: 2\n"
                       "  min_spare_servers: 0\n  max_spare_servers: 1\n");
    {
      Client client(pool.port());  // the child serving it, known from its banner, is killed
      const long child = pid_in(client.read_line().value_or(""));
      REQUIRE(child > 0);
      ::kill(static_cast<pid_t>(child), SIGKILL);  // child N killed by signal 9 (KILL); replacing it
      REQUIRE(pool.wait_for_log("killed by signal"));
      pool.expect_errors();  // a killed child is an [error] line
    }
    pool.signal(SIGTTIN);
    REQUIRE(pool.wait_for_log("TTIN: "));
    pool.signal(SIGTTOU);
    REQUIRE(pool.wait_for_log("TTOU: "));
    CHECK(pool.stop() == 0);
    corpus += pool.log();
  }
  return corpus;
}

}  // namespace

TEST_CASE("the log lines and messages the docs quote are what the binaries print", "[docs]") {
  const std::vector<Quote> quotes = quoted_output();
  const std::string output = output_of_the_binaries();
  const std::vector<std::string> printed = lines_of(output);
  std::size_t log_lines = 0;
  for (const Quote& quote : quotes) {
    INFO("quoted at " << quote.where << ": " << quote.text);
    bool found = false;
    if (quote.is_log_line) {
      std::smatch parts;
      REQUIRE(std::regex_match(quote.text, parts, log_line));
      std::string message = pattern_of(parts[2].str());
      // The program's name opens the start line: `shout starting` in the tutorial is the same line.
      if (const std::size_t at = message.find(" starting: "); at != std::string::npos) message = R"(\S+)" + message.substr(at);
      const std::regex wanted(message);
      for (const std::string& line : printed) {
        std::smatch got;
        if (std::regex_match(line, got, log_line) && got[1] == parts[1] && std::regex_match(got[2].str(), wanted)) found = true;
      }
      ++log_lines;
    } else {
      const std::regex wanted(pattern_of(quote.text));
      for (const std::string& line : printed)
        if (std::regex_search(line, wanted)) found = true;
    }
    INFO("the binaries printed:\n" << output);
    CHECK(found);
  }
  CHECK(log_lines >= 5);
  CHECK(quotes.size() >= 12);
}

namespace {

// A shell line's words before its `#` comment.
std::vector<std::string> command_words(const std::string& line) {
  return words_of(line.substr(0, line.find(" #")));
}

}  // namespace

TEST_CASE("the README's build-tree commands build and start the demos", "[docs]") {
  std::size_t started = 0, targets = 0;
  for (const Block& block : blocks_of(source_dir / "README.md")) {
    if (block.kind() != "sh" || block.text.find("build/examples/") == std::string::npos) continue;
    for (const std::string& line : lines_of(block.text)) {
      INFO("the command at " << block.where() << ": " << line);
      std::vector<std::string> words = command_words(line);
      for (std::size_t i = 0; i + 1 < words.size(); ++i)
        if (words[i] == "--target")
          for (std::size_t j = i + 1; j < words.size(); ++j, ++targets) CHECK_NOTHROW(binary(words[j]));
      if (words.empty() || !words.front().starts_with("build/examples/")) continue;
      // The program the build made there, with the arguments shown -- on a free port.
      const std::string program = binary(words.front().substr(std::string("build/examples/").size()));
      CHECK(program == (fs::path(NETSERVER_BINARY_DIR) / words.front().substr(std::string("build/").size())).string());
      CHECK_THAT(block.text, Contains("cmake -S . -B build "));  // the build tree is build/
      REQUIRE(words.size() >= 3);
      REQUIRE(words[1] == "--config");
      std::vector<std::string> args(words.begin() + 3, words.end());
      args.push_back("--port=0");
      ServerProcess server(program, read_text(source_dir / words[2]), Launch().with_args(args));
      {
        Client client(server.port());
        const std::optional<std::string> greeting = client.read_line();
        REQUIRE(greeting.has_value());
        CHECK_THAT(*greeting, Contains("Welcome"));
      }
      CHECK(server.stop() == 0);
      ++started;
    }
  }
  CHECK(started >= 2);
  CHECK(targets >= 3);
}

TEST_CASE("every scripts/demo command the README shows names a demo and loads its configuration", "[docs]") {
  const std::string script = read_text(source_dir / "scripts/demo");
  CHECK_THAT(script, Contains("exec \"build/examples/${demo}_server\" --config \"conf/${demo}.yaml\" \"$@\""));
  CHECK_THAT(script, Contains("\ndemo=chat\n"));  // no argument: chat
  CHECK_THAT(script, Contains("\n  chat|echo|guess) ;;\n"));
  std::vector<std::string> commands;
  for (const Span& span : spans_of(source_dir / "README.md"))
    if (span.text.starts_with("scripts/demo ")) commands.push_back(span.text);
  for (const Block& block : blocks_of(source_dir / "README.md"))
    for (const std::string& line : lines_of(block.text))
      for (const std::string opening : {"scripts/demo ", "$ scripts/demo "})
        if (line.starts_with(opening)) commands.push_back(line.substr(opening.size() - std::string("scripts/demo ").size()));
  std::size_t checked = 0;
  for (const std::string& command : commands) {
    INFO("the README's command: " << command);
    std::vector<std::string> words = command_words(command);
    std::string demo = "chat";
    std::vector<std::string> args(words.begin() + 1, words.end());
    if (!args.empty() && !args.front().starts_with("-")) {
      demo = args.front();
      args.erase(args.begin());
    }
    REQUIRE((demo == "chat" || demo == "echo" || demo == "guess"));
    args.insert(args.begin(), {"--config", (source_dir / "conf" / (demo + ".yaml")).string()});
    args.push_back("--check-config");
    const Outcome outcome = run(binary(demo + "_server"), args);
    INFO("status " << outcome.status << ":\n" << outcome.output);
    CHECK(outcome.status == 0);
    ++checked;
  }
  CHECK(checked >= 5);
}

namespace {

// `name=value` pairs of netbench's summary line, in order.
std::vector<std::pair<std::string, std::string>> summary_of(const std::string& line) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& word : words_of(line)) {
    const std::size_t eq = word.find('=');
    out.emplace_back(word.substr(0, eq), eq == std::string::npos ? "" : word.substr(eq + 1));
  }
  return out;
}

// A table row with its numbers (client, pid, "after client N") blanked, and its spacing (the
// columns are as wide as the numbers).
std::string shape_of(const std::string& row) {
  return trim(std::regex_replace(std::regex_replace(row, std::regex(R"(\d+)"), "#"), std::regex(R"(\s+)"), " "));
}

}  // namespace

TEST_CASE("the README's netbench pids output is what netbench prints against each personality", "[docs]") {
  std::size_t runs = 0;
  for (const Block& block : blocks_of(source_dir / "README.md")) {
    const std::vector<std::string> lines = lines_of(block.text);
    for (std::size_t i = 0; i < lines.size(); ++i) {
      if (!lines[i].starts_with("$ netbench pids ")) continue;
      INFO("the command at " << block.where() << ": " << lines[i]);
      // `$ netbench pids ARGS [| tail -1]   # echo_server SERVER-ARGS`
      const std::size_t hash = lines[i].find(" # ");
      REQUIRE(hash != std::string::npos);
      std::vector<std::string> server_args = words_of(lines[i].substr(hash + 3));
      REQUIRE(server_args.front() == "echo_server");
      server_args.erase(server_args.begin());
      std::vector<std::string> bench_args = words_of(lines[i].substr(2, hash - 2));
      bench_args.erase(bench_args.begin());
      const bool tail = bench_args.size() >= 3 && bench_args[bench_args.size() - 3] == "|";
      if (tail) bench_args.resize(bench_args.size() - 3);
      std::vector<std::string> expected;
      for (std::size_t j = i + 1; j < lines.size() && !lines[j].starts_with("$ "); ++j)
        if (!trim(lines[j]).empty()) expected.push_back(lines[j]);

      ServerProcess server(binary("echo_server"), "host: 127.0.0.1\nport: 0\n", Launch().with_args(server_args));
      // A pool answers "at once" only once its processes are up (prefork's 5, the workers).
      std::size_t processes = 0;
      for (const std::string& arg : server_args) {
        if (arg == "--personality=prefork") processes = 5;
        if (arg.starts_with("--multiplex.workers=")) processes = std::stoul(arg.substr(arg.find('=') + 1));
      }
      REQUIRE(eventually([&] { return children_of(server.pid()).size() >= processes; }));
      for (std::size_t k = 1; k < bench_args.size(); ++k)
        if (bench_args[k - 1] == "--port") bench_args[k] = std::to_string(server.port());
      const Outcome outcome = run(binary("netbench"), bench_args, 60s);
      std::vector<std::string> printed;
      for (const std::string& line : lines_of(outcome.output))
        if (!trim(line).empty()) printed.push_back(line);
      if (tail && !printed.empty()) printed.erase(printed.begin(), printed.end() - 1);
      INFO("netbench printed (status " << outcome.status << "):\n" << outcome.output);
      CHECK(outcome.status == 0);
      REQUIRE(printed.size() == expected.size());
      for (std::size_t j = 0; j + 1 < printed.size(); ++j) CHECK(shape_of(printed[j]) == shape_of(expected[j]));
      // The summary: the same fields in the same order; the values that do not depend on timing.
      const auto got = summary_of(printed.back()), shown_summary = summary_of(expected.back());
      REQUIRE(got.size() == shown_summary.size());
      for (std::size_t k = 0; k < got.size(); ++k) {
        CHECK(got[k].first == shown_summary[k].first);
        if (got[k].first == "mode" || got[k].first == "clients" || got[k].first == "distinct_pids" ||
            got[k].first == "answered_at_once" || got[k].first == "concurrent")
          CHECK(got[k] == shown_summary[k]);
      }
      CHECK(server.stop() == 0);
      ++runs;
    }
  }
  CHECK(runs >= 5);
}

TEST_CASE("the docs quote the binary's list of personalities wherever they quote it", "[docs]") {
  std::string listed;
  for (const std::string& name : personalities_of_the_binary()) listed += (listed.empty() ? "" : ", ") + name;
  std::size_t quoted = 0;
  for (const Span& span : all_spans()) {
    if (!span.text.starts_with("expected one of: ") || span.text.find("single") == std::string::npos) continue;
    INFO(span.where() << ": `" << span.text << "`");
    CHECK(span.text.substr(0, std::string("expected one of: ").size() + listed.size()) == "expected one of: " + listed);
    ++quoted;
  }
  CHECK(quoted >= 1);
}

TEST_CASE("development.md's fuzzing table lists every fuzz target", "[docs]") {
  const std::set<std::string> listed = first_column(source_dir / "docs/development.md", "## Fuzzing");
  std::set<std::string> targets;  // what scripts/fuzz runs: fuzz/NAME.cpp with a corpus fuzz/corpus/NAME/
  for (const auto& entry : fs::directory_iterator(source_dir / "fuzz" / "corpus"))
    if (entry.is_directory() && fs::exists(source_dir / "fuzz" / (entry.path().filename().string() + ".cpp")))
      targets.insert(entry.path().filename().string());
  CHECK(targets.size() >= 5);
  CHECK(listed == targets);
}

namespace {

// The signals a mask of /proc/PID/status (SigBlk, SigIgn, SigCgt) names.
std::set<std::string> signals_in(const std::string& status, const std::string& field) {
  static const std::map<int, std::string> names{
      {SIGHUP, "HUP"},   {SIGINT, "INT"},   {SIGQUIT, "QUIT"}, {SIGUSR1, "USR1"}, {SIGUSR2, "USR2"},
      {SIGPIPE, "PIPE"}, {SIGALRM, "ALRM"}, {SIGTERM, "TERM"}, {SIGCHLD, "CHLD"}, {SIGCONT, "CONT"},
      {SIGTSTP, "TSTP"}, {SIGTTIN, "TTIN"}, {SIGTTOU, "TTOU"}, {SIGURG, "URG"},   {SIGXCPU, "XCPU"},
      {SIGXFSZ, "XFSZ"}, {SIGVTALRM, "VTALRM"}, {SIGPROF, "PROF"}, {SIGWINCH, "WINCH"}, {SIGIO, "IO"},
      {SIGPWR, "PWR"},   {SIGSYS, "SYS"}};
  const std::size_t at = status.find("\n" + field + ":");
  if (at == std::string::npos) throw std::runtime_error("no " + field + " in /proc/PID/status");
  const unsigned long long mask = std::stoull(status.substr(at + field.size() + 2, 17), nullptr, 16);
  std::set<std::string> out;
  for (int number = 1; number < 64; ++number)
    if ((mask >> (number - 1)) & 1) {
      const auto name = names.find(number);
      out.insert(name == names.end() ? "signal " + std::to_string(number) : name->second);
    }
  return out;
}

}  // namespace

TEST_CASE("operations.md's signal table names every signal the server blocks or ignores", "[docs]") {
  // The table's first column: `| TERM, INT | ...`.
  std::set<std::string> documented;
  const std::string page = read_text(source_dir / "docs/operations.md");
  const std::size_t start = page.find("\n## Signals\n");
  REQUIRE(start != std::string::npos);
  bool in_table = false;
  for (const std::string& line : lines_of(page.substr(start + 1))) {
    if (!line.starts_with("|")) {
      if (in_table) break;
      continue;
    }
    in_table = true;
    const std::string first = trim(line.substr(1, line.find('|', 1) - 1));
    if (first == "signal" || first.starts_with("---")) continue;
    std::string names = first;
    replace_all(names, ",", " ");
    for (const std::string& name : words_of(names)) documented.insert(name);
  }
  ServerProcess server(binary("echo_server"), "host: 127.0.0.1\nport: 0\n");
  // What the server holds, caught or ignores. Read until it matches (or 10 s): the listeners are
  // logged before the loop's signals are set up, so a first look may come too early.
  const auto handled_now = [&] {
    const std::string status = read_text("/proc/" + std::to_string(server.pid()) + "/status");
    std::set<std::string> handled;  // held for the loop (blocked, read through signalfd/asio), caught or ignored
    for (const char* field : {"SigBlk", "SigCgt", "SigIgn"})
      for (const std::string& name : signals_in(status, field)) handled.insert(name);
    // glibc's own signals below SIGRTMIN (32 and 33: thread cancellation and set*id across threads)
    // are caught once a process has threads (the stall watcher's, in a process serving many clients).
    for (int internal = 32; internal < SIGRTMIN; ++internal) handled.erase("signal " + std::to_string(internal));
#ifdef __SANITIZE_ADDRESS__
    for (int fault : {SIGSEGV, SIGBUS, SIGFPE, SIGILL}) handled.erase("signal " + std::to_string(fault));  // the sanitizer's
#endif
    // What this test itself ignores the server inherits: neither side is asked about it.
    for (const std::string& name : signals_in(read_text("/proc/self/status"), "SigIgn")) handled.erase(name);
    return handled;
  };
  for (const std::string& name : signals_in(read_text("/proc/self/status"), "SigIgn")) documented.erase(name);
  std::set<std::string> handled;
  eventually([&] { return (handled = handled_now()) == documented; });
  CHECK(server.stop() == 0);
  CHECK(documented.size() >= 5);
  CHECK(documented == handled);
}

namespace {

// The shell lines of a block: `\` continuations joined, `# comments` dropped, empty lines skipped.
std::vector<std::string> shell_lines(std::string text) {
  replace_all(text, "\\\n", " ");
  std::vector<std::string> out;
  for (const std::string& line : lines_of(text))
    if (const std::string command = trim(line.substr(0, line.find(" #"))); !command.empty()) out.push_back(command);
  return out;
}

// Each 127.0.0.1:PORT of the docs gets a free port of its own.
std::string with_free_ports(std::string text, std::map<std::string, int>& ports) {
  static const std::regex address(R"(127\.0\.0\.1([: ])(\d+))");
  std::string out;
  std::smatch match;
  while (std::regex_search(text, match, address)) {
    int& port = ports[match[2].str()];
    if (port == 0) port = free_port();
    out += match.prefix().str() + "127.0.0.1" + match[1].str() + std::to_string(port);
    text = match.suffix().str();
  }
  return out + text;
}

}  // namespace

namespace {

// Ends the openssl s_client this test started (its child named openssl; the server is another).
void stop_tls_client(pid_t server) {
  for (const pid_t pid : children_of(::getpid())) {
    if (pid == server) continue;
    std::string name = read_text("/proc/" + std::to_string(pid) + "/comm");
    if (trim(name) == "openssl") ::kill(pid, SIGTERM);
  }
}

}  // namespace

TEST_CASE("tls.md's try-it commands serve the chat over TLS and plaintext in one room", "[docs]") {
  const fs::path page = source_dir / "docs/tls.md";
  const std::vector<Block> blocks = blocks_of(page);
  const auto found = std::find_if(blocks.begin(), blocks.end(),
                                  [](const Block& block) { return block.text.find("openssl req") != std::string::npos; });
  REQUIRE(found != blocks.end());
  INFO("the commands at " << found->where() << ":\n" << found->text);
  TempDir dir;
  std::string text = found->text;
  replace_all(text, "/tmp/netserver-tls", dir.path().string());
  std::map<std::string, int> ports;
  std::optional<ServerProcess> server;
  std::string tls_output;
  std::thread tls_client;
  struct JoinAtExit {  // a failed REQUIRE must not leave the thread joinable (std::terminate)
    std::thread& thread;
    ~JoinAtExit() {
      if (thread.joinable()) thread.join();
    }
  } join_at_exit{tls_client};
  std::size_t commands = 0;
  for (const std::string& line : shell_lines(with_free_ports(text, ports))) {
    INFO("the command: " << line);
    std::vector<std::string> words = words_of(line);
    const std::vector<std::string> rest(words.begin() + 1, words.end());
    ++commands;
    if (words[0] == "mkdir") {
      CHECK(fs::is_directory(words.back()));  // the TempDir
    } else if (words[0] == "openssl" && words[1] == "req") {
      const Outcome outcome = run("/usr/bin/openssl", rest, 30s);
      INFO("openssl said:\n" << outcome.output);
      REQUIRE(outcome.status == 0);
    } else if (words[0].starts_with("build/examples/")) {
      // log_level 3 from the file (one line per connection) tells when the TLS client is in.
      server.emplace(binary(fs::path(words[0]).filename().string()), "log_level: 3\n", Launch().with_args(rest));
    } else if (words[0] == "openssl" && words[1] == "s_client") {
      REQUIRE(server.has_value());
      // -quiet ignores the end of its input: it reads until it is stopped, after the message below.
      tls_client = std::thread([&tls_output, rest] { tls_output = run("/usr/bin/openssl", rest, 20s).output; });
      REQUIRE(server->wait_for_log("connection from 127.0.0.1:"));
    } else if (words[0] == "nc") {
      REQUIRE(tls_client.joinable());
      Client plaintext(std::stoi(words[2]));
      // Once /who lists both, the TLS client is a member of the room (its handshake done).
      bool both = false;
      for (int attempt = 0; attempt < 50 && !both; ++attempt) {
        plaintext.send("/who\r\n");
        while (const std::optional<std::string> line = plaintext.read_line()) {
          if (line->find(" client(s) in this process") == std::string::npos) continue;
          both = line->starts_with("2 ");
          break;
        }
        if (!both) std::this_thread::sleep_for(50ms);
      }
      REQUIRE(both);
      while (plaintext.read_line(300ms)) {  // the rest of /who's answer
      }
      plaintext.send("hello from the plaintext port\r\n");
      CHECK(plaintext.silent_for(1s));  // the sender's line goes to the others only
      stop_tls_client(server->pid());
      tls_client.join();
    } else {
      FAIL("a command this test does not know: " << line);
    }
  }
  if (tls_client.joinable()) tls_client.join();
  CHECK(commands >= 5);
  INFO("the TLS client printed:\n" << tls_output);
  CHECK_THAT(tls_output, Contains(" said: hello from the plaintext port"));
  // The banner the page says the TLS client reads.
  std::size_t banners = 0;
  for (const Span& span : spans_of(page))
    if (span.text.starts_with("(personality multiplex, pid N, tls ")) {
      CHECK(std::regex_search(tls_output, std::regex(pattern_of(span.text))));
      ++banners;
    }
  CHECK(banners == 1);
  REQUIRE(server.has_value());
  CHECK(server->stop() == 0);
}

namespace {

// The targets the project's CMakeLists.txt files define.
std::set<std::string> build_targets() {
  static const std::regex definition(R"(add_(executable|library|custom_target)\(\s*([A-Za-z0-9_.+-]+))");
  std::set<std::string> targets;
  for (const auto& entry : fs::recursive_directory_iterator(source_dir)) {
    const std::string top = fs::relative(entry.path(), source_dir).begin()->string();
    if (top.starts_with("build") || top.starts_with(".")) continue;  // build trees, .git
    if (entry.path().filename() != "CMakeLists.txt") continue;
    const std::string text = read_text(entry.path());
    for (auto it = std::sregex_iterator(text.begin(), text.end(), definition); it != std::sregex_iterator(); ++it)
      targets.insert((*it)[2].str());
  }
  return targets;
}

}  // namespace

TEST_CASE("every script and build target the docs name exists", "[docs]") {
  static const std::regex script(R"(\bscripts/([A-Za-z0-9_-]+))");
  static const std::regex target(R"(--target((\s+[A-Za-z0-9_-]+)+))");
  const std::set<std::string> targets = build_targets();
  REQUIRE(targets.count("netserver") == 1);
  std::size_t scripts = 0, named = 0;
  for (const fs::path& page : pages()) {
    int number = 0;
    for (const std::string& line : lines_of(read_text(page))) {
      ++number;
      INFO(shown(page) << ":" << number << ": " << line);
      for (auto it = std::sregex_iterator(line.begin(), line.end(), script); it != std::sregex_iterator(); ++it) {
        const fs::path file = source_dir / "scripts" / (*it)[1].str();
        CHECK(fs::is_regular_file(file));
        CHECK(::access(file.c_str(), X_OK) == 0);
        ++scripts;
      }
      for (auto it = std::sregex_iterator(line.begin(), line.end(), target); it != std::sregex_iterator(); ++it)
        for (const std::string& name : words_of((*it)[1].str())) {
          INFO("the build target " << name);
          CHECK(targets.count(name) == 1);
          ++named;
        }
    }
  }
  CHECK(scripts >= 20);
  CHECK(named >= 5);
}

TEST_CASE("every configuration sample is marked yaml so that it is loaded", "[docs]") {
  // A block of configuration keys in an unmarked (or otherwise marked) fence is never checked.
  const std::set<std::string> keys = reference_keys();
  static const std::regex setting(R"(^([a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)?):( |$))");
  std::size_t blocks = 0;
  for (const Block& block : all_blocks()) {
    if (block.kind() == "yaml") continue;
    std::size_t settings = 0;
    for (const std::string& line : lines_of(block.text)) {
      std::smatch match;
      if (std::regex_search(line, match, setting) && keys.count(match[1].str()) == 1) ++settings;
    }
    INFO("the block at " << block.where() << " (" << block.kind() << ") holds " << settings << " configuration lines:\n"
                         << block.text);
    CHECK(settings == 0);
    ++blocks;
  }
  CHECK(blocks >= 30);
}
