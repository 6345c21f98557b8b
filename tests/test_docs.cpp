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
// Links: every relative link must name a file inside the repository, and its #anchor a heading
// of that file.

#include <sys/stat.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

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

TEST_CASE("every relative link and anchor in the README and docs resolves inside the repository", "[docs]") {
  const fs::path root = fs::weakly_canonical(source_dir);
  std::size_t checked = 0;
  for (const fs::path& page : pages()) {
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
