// The version macros of netserver/version.hpp agree with each other and with version(); the
// build reads the same header for project(VERSION), so the package carries this number too.

#include <catch2/catch.hpp>

#include <string>

#include <netserver/server.hpp>
#include <netserver/version.hpp>

TEST_CASE("the version macros agree with each other and with version()", "[version]") {
  const std::string joined = std::to_string(NETSERVER_VERSION_MAJOR) + "." + std::to_string(NETSERVER_VERSION_MINOR) +
                             "." + std::to_string(NETSERVER_VERSION_PATCH);
  CHECK(std::string(NETSERVER_VERSION_STRING) == joined);
  CHECK(NETSERVER_VERSION == NETSERVER_VERSION_MAJOR * 10000 + NETSERVER_VERSION_MINOR * 100 + NETSERVER_VERSION_PATCH);
  CHECK(netserver::version() == NETSERVER_VERSION_STRING);
  static_assert(NETSERVER_VERSION >= 200, "0.2.0 is the version with the installed package");
}
