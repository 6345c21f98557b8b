// The installed package as its users meet it: `cmake --install` into a temporary prefix, then the
// tutorial's project (docs/tutorial/) built three ways -- find_package against the prefix,
// add_subdirectory of this source tree, pkg-config -- and run and talked to over loopback. Also:
// every installed header compiles alone against the prefix, the version file accepts only 0.2,
// the Debian packages hold the right files and dependencies, the tutorial shows the code compiled.

#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <algorithm>
#include <regex>
#include <sstream>

#include "harness.hpp"

using namespace harness;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

const fs::path source_dir = NETSERVER_SOURCE_DIR;
const fs::path tutorial_dir = source_dir / "docs" / "tutorial";
constexpr Seconds configure_timeout = 300s;
constexpr Seconds build_timeout = 1500s;  // add_subdirectory compiles the library again

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> split(const std::string& list, char separator) {
  std::vector<std::string> items;
  std::istringstream in(list);
  for (std::string item; std::getline(in, item, separator);)
    if (!item.empty()) items.push_back(item);
  return items;
}

std::string fmt_command(const std::vector<std::string>& command) {
  std::string text;
  for (const std::string& part : command) text += (text.empty() ? "" : " ") + part;
  return text;
}

// Runs a command (through env(1), so `variables` reach it) and requires it to succeed.
std::string must_run(const std::vector<std::string>& command, Seconds timeout = configure_timeout,
                     const std::vector<std::string>& variables = {}) {
  std::vector<std::string> args = variables;
  args.insert(args.end(), command.begin(), command.end());
  const Outcome outcome = run("/usr/bin/env", args, timeout);
  INFO("command: " << fmt_command(command) << "\noutput:\n" << outcome.output);
  REQUIRE(outcome.status == 0);
  return outcome.output;
}

// ccache shares compiled objects between the consumer builds and this build when available.
std::vector<std::string> ccache_variables() { return {"CCACHE_NOHASHDIR=1"}; }

// What every consumer build gets from the build running these tests: a sanitized library needs
// the sanitizer runtimes at the consumer's link.
std::vector<std::string> consumer_cmake_options() {
  std::vector<std::string> options{"-DCMAKE_BUILD_TYPE=" NETSERVER_BUILD_TYPE,
                                   "-DCMAKE_CXX_COMPILER=" NETSERVER_CXX_COMPILER};
  if (std::string(NETSERVER_CCACHE).size()) options.push_back("-DCMAKE_CXX_COMPILER_LAUNCHER=" NETSERVER_CCACHE);
  if (std::string(NETSERVER_SANITIZER_LINK_FLAGS).size())
    options.push_back("-DCMAKE_EXE_LINKER_FLAGS=" NETSERVER_SANITIZER_LINK_FLAGS);
  return options;
}

// Installs the library (component dev only: what libnetserver-dev holds) into `prefix`.
void install_library(const fs::path& prefix) {
  must_run({NETSERVER_CMAKE_COMMAND, "--install", NETSERVER_BINARY_DIR, "--prefix", prefix.string(),
            "--component", "dev"});
}

// Configures and builds a CMake project; returns the build directory.
fs::path build_project(const fs::path& source, const fs::path& build, std::vector<std::string> options) {
  std::vector<std::string> configure{NETSERVER_CMAKE_COMMAND, "-S", source.string(), "-B", build.string()};
  for (const std::string& option : consumer_cmake_options()) configure.push_back(option);
  configure.insert(configure.end(), options.begin(), options.end());
  must_run(configure, configure_timeout, ccache_variables());
  must_run({NETSERVER_CMAKE_COMMAND, "--build", build.string(), "-j2"}, build_timeout, ccache_variables());
  return build;
}

// The tutorial's server, started on a free loopback port and driven through a short session.
void talk_to_tutorial_server(const fs::path& binary) {
  REQUIRE(fs::exists(binary));
  ServerProcess server(binary.string(), "host: 127.0.0.1\nport: 0\nlog_level: 3\n");
  CHECK(server.wait_for_log("shout starting: netserver " NETSERVER_VERSION_TEXT));
  Client client(server.port());
  CHECK(client.read_line() == "Hello! Type something; 'bye' ends the session.");
  client.send("hello\r\n");
  CHECK(client.read_line() == "1: HELLO");
  client.send("second line\r\n");
  CHECK(client.read_line() == "2: SECOND LINE");
  client.send("bye\r\n");
  CHECK(client.closed_by_peer());
  CHECK(server.stop() == 0);
}

// The consumer's configure must have found every dependency the package declares (a plain
// `-lyaml-cpp` would link even without it, hiding a missing find_dependency).
void require_dependencies_found(const fs::path& build) {
  const std::string cache = read_text(build / "CMakeCache.txt");
  for (const std::string& entry : split(NETSERVER_DEPENDENCY_CACHE_ENTRIES, ',')) {
    INFO("CMakeCache.txt of the consumer lacks " << entry);
    CHECK(std::regex_search(cache, std::regex("\n" + entry + ":[A-Z]+=.+")));
  }
}

}  // namespace

TEST_CASE("the tutorial project builds with find_package against the installed prefix", "[package]") {
  TempDir work;
  install_library(work.path() / "prefix");
  const fs::path build = build_project(tutorial_dir, work.path() / "build",
                                       {"-DCMAKE_PREFIX_PATH=" + (work.path() / "prefix").string()});
  require_dependencies_found(build);
  const std::string cache = read_text(build / "CMakeCache.txt");
  CHECK_THAT(cache, Contains("netserver_DIR:PATH=" + (work.path() / "prefix").string()));
  talk_to_tutorial_server(build / "shout_server");
}

TEST_CASE("a personality written out of tree against the installed engine interface serves clients",
          "[package][engine]") {
  TempDir work;
  install_library(work.path() / "prefix");
  const fs::path build = build_project(source_dir / "tests" / "package" / "own_personality", work.path() / "build",
                                       {"-DCMAKE_PREFIX_PATH=" + (work.path() / "prefix").string()});
  const std::string trio = (build / "trio_server").string();
  {
    ServerProcess server(trio, "host: 127.0.0.1\nport: 0\nlog_level: 3\ntrio:\n  children: 3\n  sessions: 100\n");
    REQUIRE(eventually([&] { return children_of(server.pid()).size() == 3; }));
    const std::vector<pid_t> children = children_of(server.pid());
    std::vector<Client> clients;
    for (int i = 0; i < 6; ++i) {
      clients.emplace_back(server.port());
      const auto banner = clients.back().read_line();
      REQUIRE(banner);
      CHECK(std::count(children.begin(), children.end(), pid_in(*banner)) == 1);  // a child serves, never the parent
      clients.back().send("hello " + std::to_string(i) + "\r\n");
      CHECK(clients.back().read_line() == "hello " + std::to_string(i));
    }
    CHECK(server.stop() == 0);
  }
  // One child of two sessions: the third client is refused, as the personality asked.
  ServerProcess server(trio, "host: 127.0.0.1\nport: 0\nlog_level: 3\ntrio:\n  children: 1\n  sessions: 2\n");
  Client first(server.port()), second(server.port());
  CHECK(first.read_line());
  CHECK(second.read_line());
  Client third(server.port());
  CHECK(third.read_line() == "error: server busy");
  CHECK(server.stop() == 0);
}

TEST_CASE("the tutorial project builds with add_subdirectory of the source tree", "[package]") {
  TempDir work;
  // The same project, with add_subdirectory in place of find_package.
  std::string cmake_lists = read_text(tutorial_dir / "CMakeLists.txt");
  const std::string find_line = "find_package(netserver 0.2 REQUIRED)";
  REQUIRE(cmake_lists.find(find_line) != std::string::npos);
  cmake_lists.replace(cmake_lists.find(find_line), find_line.size(),
                      "add_subdirectory(" + source_dir.string() + " netserver)");
  work.write("CMakeLists.txt", cmake_lists);
  fs::copy_file(tutorial_dir / "first_server.cpp", work.path() / "first_server.cpp");
  const fs::path build = build_project(work.path(), work.path() / "build",
                                       {"-DNETSERVER_WERROR=" NETSERVER_WERROR_VALUE,
                                        "-DNETSERVER_SANITIZE=" NETSERVER_SANITIZE_VALUE});
  // Only the library: no tests, examples or bench of a project that is not the top level.
  CHECK_FALSE(fs::exists(build / "netserver" / "tests"));
  CHECK_FALSE(fs::exists(build / "netserver" / "examples"));
  CHECK_FALSE(fs::exists(build / "netserver" / "bench"));
  talk_to_tutorial_server(build / "shout_server");
}

TEST_CASE("the tutorial server builds with pkg-config against the installed prefix", "[package]") {
  TempDir work;
  const fs::path prefix = work.path() / "prefix";
  install_library(prefix);
  const std::string pc_path = "PKG_CONFIG_PATH=" + (prefix / NETSERVER_INSTALL_LIBDIR / "pkgconfig").string();
  // A static library: --static adds the private dependencies (yaml-cpp, libsystemd, ...).
  const std::string flags = must_run({"pkg-config", "--static", "--cflags", "--libs", "netserver"},
                                     configure_timeout, {pc_path});
  CHECK_THAT(flags, Contains("-I" + (prefix / "include").string()));
  std::vector<std::string> compile{NETSERVER_CXX_COMPILER, (tutorial_dir / "first_server.cpp").string(), "-o",
                                   (work.path() / "shout_server").string()};
  for (const std::string& flag : split(flags.substr(0, flags.find('\n')), ' ')) compile.push_back(flag);
  for (const std::string& flag : split(NETSERVER_SANITIZER_LINK_FLAGS, ' ')) compile.push_back(flag);
  must_run(compile, build_timeout);
  talk_to_tutorial_server(work.path() / "shout_server");
}

TEST_CASE("every installed header compiles alone against the installed prefix", "[package]") {
  TempDir work;
  const fs::path prefix = work.path() / "prefix";
  install_library(prefix);
  const std::string pc_path = "PKG_CONFIG_PATH=" + (prefix / NETSERVER_INSTALL_LIBDIR / "pkgconfig").string();
  const std::string cflags = must_run({"pkg-config", "--cflags", "netserver"}, configure_timeout, {pc_path});
  std::vector<fs::path> headers;
  for (const auto& entry : fs::directory_iterator(prefix / "include" / "netserver")) headers.push_back(entry.path());
  std::sort(headers.begin(), headers.end());
  // As many headers as include/netserver holds: none is left out of the install.
  std::size_t public_headers = 0;
  for (const auto& entry : fs::directory_iterator(source_dir / "include" / "netserver"))
    public_headers += entry.path().extension() == ".hpp";
  CHECK(headers.size() == public_headers);
  std::string sources;
  for (const fs::path& header : headers) {
    // An installed header includes only the standard library, dependencies and netserver/*.
    INFO(header.filename().string() << " includes a private header");
    CHECK_FALSE(std::regex_search(read_text(header), std::regex(R"(#include\s+"(?!netserver/))")));
    const std::string include = "#include <netserver/" + header.filename().string() + ">\n";
    sources += work.write(header.stem().string() + ".cpp", include + include).string() + "\n";
  }
  // Each one alone (included twice: the include guard works), two compilers at a time.
  work.write("sources", sources);
  const std::string script = "xargs -P 2 -I{} " NETSERVER_CXX_COMPILER " -fsyntax-only -Wall -Wextra -Werror " +
                             cflags.substr(0, cflags.find('\n')) + " {} < " + (work.path() / "sources").string();
  must_run({"/bin/sh", "-c", script}, build_timeout);
}

TEST_CASE("find_package accepts 0.2 and rejects other minor and major versions", "[package]") {
  TempDir work;
  install_library(work.path() / "prefix");
  work.write("CMakeLists.txt", R"(cmake_minimum_required(VERSION 3.25)
project(version_check LANGUAGES CXX)
foreach(wanted 0.1 0.3 1.0)
  find_package(netserver ${wanted} QUIET)
  message(STATUS "netserver ${wanted}: ${netserver_FOUND}")
endforeach()
find_package(netserver 0.2.0 REQUIRED)
message(STATUS "netserver 0.2.0: ${netserver_FOUND} ${netserver_VERSION} target ${TARGET_NAME}")
if(TARGET netserver::netserver)
  message(STATUS "target netserver::netserver exists")
endif()
)");
  const std::string output = must_run({NETSERVER_CMAKE_COMMAND, "-S", work.path().string(), "-B",
                                       (work.path() / "build").string(),
                                       "-DCMAKE_PREFIX_PATH=" + (work.path() / "prefix").string()});
  CHECK_THAT(output, Contains("netserver 0.1: 0"));
  CHECK_THAT(output, Contains("netserver 0.3: 0"));
  CHECK_THAT(output, Contains("netserver 1.0: 0"));
  CHECK_THAT(output, Contains("netserver 0.2.0: 1 " NETSERVER_VERSION_TEXT));
  CHECK_THAT(output, Contains("target netserver::netserver exists"));
}

TEST_CASE("the tutorial shows exactly the code the consumer tests compile", "[package]") {
  const std::string tutorial = read_text(source_dir / "docs" / "tutorial.md");
  for (const char* file : {"first_server.cpp", "CMakeLists.txt"}) {
    INFO("docs/tutorial.md does not quote docs/tutorial/" << file << " verbatim");
    CHECK_THAT(tutorial, Contains(read_text(tutorial_dir / file)));
  }
  std::size_t lines = 0;
  for (char c : read_text(tutorial_dir / "first_server.cpp")) lines += c == '\n';
  CHECK(lines <= 30);
}

namespace {

// One Debian package built by cpack: its control fields, file list and files.
struct DebPackage {
  fs::path file;
  std::string field(const std::string& name) const {
    std::string value = must_run({"dpkg-deb", "--field", file.string(), name});
    return value.substr(0, value.find('\n'));
  }
  std::string contents() const { return must_run({"dpkg-deb", "--contents", file.string()}); }
  std::string file_text(const std::string& path) const {
    return must_run({"/bin/sh", "-c", "dpkg-deb --fsys-tarfile " + file.string() + " | tar -xO ." + path});
  }
};

DebPackage find_deb(const fs::path& folder, const std::string& name) {
  for (const auto& entry : fs::directory_iterator(folder))
    if (entry.path().filename().string().starts_with(name + "_") && entry.path().extension() == ".deb")
      return DebPackage{entry.path()};
  FAIL("cpack made no " << name << " package in " << folder);
  return {};
}

}  // namespace

TEST_CASE("cpack makes libnetserver-dev and netserver-demos with their files and dependencies", "[package]") {
  TempDir work;
  must_run({NETSERVER_CPACK_COMMAND, "-G", "DEB", "-B", work.path().string(), "--config",
            NETSERVER_BINARY_DIR "/CPackConfig.cmake"},
           build_timeout);

  const DebPackage dev = find_deb(work.path(), "libnetserver-dev");
  CHECK(dev.field("Version") == NETSERVER_VERSION_TEXT "-1");
  const std::string dev_depends = dev.field("Depends");
  for (const std::string& package : split(NETSERVER_DEB_DEPENDS, ',')) CHECK_THAT(dev_depends, Contains(package));
  for (const char* package : {"libboost1.81-dev", "libfmt-dev", "libspdlog-dev", "libyaml-cpp-dev", "libsystemd-dev"})
    CHECK_THAT(dev_depends, Contains(package));
  const std::string dev_files = dev.contents();
  for (const char* path : {"./usr/include/netserver/netserver.hpp", "./usr/include/netserver/version.hpp",
                           "./usr/" NETSERVER_INSTALL_LIBDIR "/libnetserver.a",
                           "./usr/" NETSERVER_INSTALL_LIBDIR "/cmake/netserver/netserver-config.cmake",
                           "./usr/" NETSERVER_INSTALL_LIBDIR "/cmake/netserver/netserver-config-version.cmake",
                           "./usr/" NETSERVER_INSTALL_LIBDIR "/cmake/netserver/netserver-targets.cmake",
                           "./usr/" NETSERVER_INSTALL_LIBDIR "/pkgconfig/netserver.pc"})
    CHECK_THAT(dev_files, Contains(path));
  CHECK_THAT(dev_files, !Contains("/bin/") && !Contains("/etc/") && !Contains(".cpp"));
  CHECK_THAT(dev.file_text("/usr/" NETSERVER_INSTALL_LIBDIR "/pkgconfig/netserver.pc"), Contains("prefix=/usr\n"));

  const DebPackage demos = find_deb(work.path(), "netserver-demos");
  const std::string demo_depends = demos.field("Depends");  // from the binaries' shared libraries
  for (const char* library : {"libyaml-cpp", "libsystemd0", "libspdlog", "libfmt", "libc6"})
    CHECK_THAT(demo_depends, Contains(library));
  const std::string demo_files = demos.contents();
  for (const char* path : {"./usr/bin/echo_server", "./usr/bin/chat_server", "./etc/netserver/echo.yaml",
                           "./etc/netserver/chat.yaml", "./lib/systemd/system/netserver-echo.service",
                           "./lib/systemd/system/netserver-chat.service", "./lib/systemd/system/netserver-chat.socket"})
    CHECK_THAT(demo_files, Contains(path));
  CHECK_THAT(demo_files, !Contains("/include/") && !Contains("libnetserver.a"));
  // The units start the installed binaries with the installed configs.
  CHECK_THAT(demos.file_text("/lib/systemd/system/netserver-chat.service"),
             Contains("ExecStart=/usr/bin/chat_server --config /etc/netserver/chat.yaml"));
  CHECK_THAT(demos.file_text("/lib/systemd/system/netserver-echo.service"),
             Contains("ExecStart=/usr/bin/echo_server --config /etc/netserver/echo.yaml"));
  CHECK_THAT(must_run({"dpkg-deb", "--info", demos.file.string(), "conffiles"}),
             Contains("/etc/netserver/chat.yaml") && Contains("/etc/netserver/echo.yaml"));
}
