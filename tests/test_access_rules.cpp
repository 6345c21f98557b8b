// Access rules: networks, regexes, and Net::Server's order of evaluation.

#include <catch2/catch.hpp>

#include <netserver/access.hpp>

using namespace netserver;

TEST_CASE("networks parse and contain addresses by prefix", "[access]") {
  Network network;
  std::string problem;
  REQUIRE(Network::parse("10.1.0.0/16", network, problem));
  CHECK(network.contains("10.1.200.3"));
  CHECK_FALSE(network.contains("10.2.0.1"));
  CHECK(network.contains("::ffff:10.1.2.3"));  // IPv4-mapped counts as IPv4
  CHECK_FALSE(network.contains("::1"));

  REQUIRE(Network::parse("127.0.0.2", network, problem));  // one address
  CHECK(network.contains("127.0.0.2"));
  CHECK_FALSE(network.contains("127.0.0.3"));

  REQUIRE(Network::parse("fe80::/10", network, problem));
  CHECK(network.contains("fe80::1"));
  CHECK(network.contains("febf::1"));
  CHECK_FALSE(network.contains("fec0::1"));
  REQUIRE(Network::parse("::1/128", network, problem));
  CHECK(network.contains("::1"));
  REQUIRE(Network::parse("0.0.0.0/0", network, problem));
  CHECK(network.contains("192.0.2.1"));

  CHECK_FALSE(Network::parse("10.0.0.0/33", network, problem));
  CHECK(problem == "\"10.0.0.0/33\": the prefix length must be 0 to 32");
  CHECK_FALSE(Network::parse("example.com/8", network, problem));
  CHECK_FALSE(Network::parse("10.0.0.0/", network, problem));
}

TEST_CASE("without rules everyone is allowed", "[access]") {
  const AccessRules rules;
  CHECK(rules.allows("192.0.2.1", false));
}

TEST_CASE("deny wins over allow and anything unmatched is refused (Net::Server's order)", "[access]") {
  const AccessRules rules({R"(127\.0\.0\.\d+)"}, {R"(127\.0\.0\.2)"}, {"::1/128"}, {"10.0.0.0/8"});
  CHECK(rules.allows("127.0.0.1", false));
  CHECK_FALSE(rules.allows("127.0.0.2", false));  // denied though the allow regex matches
  CHECK(rules.allows("::1", false));
  CHECK_FALSE(rules.allows("10.0.0.1", false));
  CHECK_FALSE(rules.allows("192.0.2.1", false));  // no rule admits it
  CHECK(rules.allows("", true));                   // unix-socket clients always
}

TEST_CASE("regexes match the whole address", "[access]") {
  const AccessRules rules({"127.0.0.1"}, {}, {}, {});
  CHECK(rules.allows("127.0.0.1", false));
  CHECK_FALSE(rules.allows("127.0.0.10", false));  // anchored: no prefix matches
  CHECK_FALSE(rules.allows("1127.0.0.1", false));
}

TEST_CASE("bad regexes and networks are reported", "[access]") {
  CHECK(check_regexes({"ok", "("}).starts_with("\"(\" is not a valid regular expression"));
  CHECK(check_regexes({"a+", "b"}).empty());
  CHECK(check_networks({"10.0.0.0/8", "nope"}) == "\"nope\" is not an IPv4 or IPv6 address");
}

TEST_CASE("an IPv4-mapped network counts its prefix from the IPv6 address", "[access][hardening]") {
  Network network;
  std::string problem;
  REQUIRE(Network::parse("::ffff:10.0.0.0/104", network, problem));  // = 10.0.0.0/8
  CHECK(network.contains("10.200.0.1"));
  CHECK(network.contains("::ffff:10.1.2.3"));
  CHECK_FALSE(network.contains("11.0.0.1"));
  REQUIRE(Network::parse("::ffff:127.0.0.2", network, problem));
  CHECK(network.contains("127.0.0.2"));
  CHECK_FALSE(network.contains("127.0.0.3"));
  REQUIRE(Network::parse("::ffff:0.0.0.0/96", network, problem));
  CHECK(network.contains("192.0.2.1"));
  CHECK_FALSE(Network::parse("::ffff:10.0.0.0/8", network, problem));
  CHECK(problem == "\"::ffff:10.0.0.0/8\": the prefix length must be 96 to 128 for an IPv4-mapped address");
  CHECK_FALSE(Network::parse("::ffff:10.0.0.0/129", network, problem));
}

TEST_CASE("a pattern that backtracks without bound refuses the peer instead of holding the loop", "[access][hardening]") {
  // Found by the access_rules fuzzer: std::regex spent exponential time on nested repetition,
  // for every connection. Each of these would take hours on a full IPv6 address without a bound.
  const std::string address = "2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff";
  for (const std::string pattern : {"((a|.)*)*b", "(.|.|.)*x", "(.*.*)*z"}) {
    INFO(pattern);
    CHECK_FALSE(AccessRules({pattern}, {}, {}, {}).allows(address, false));  // allow: undecided is no
    CHECK_FALSE(AccessRules({".*"}, {pattern}, {}, {}).allows(address, false));  // deny: undecided is yes
  }
  CHECK(AccessRules({"((2|.)*)*f"}, {}, {}, {}).allows(address, false));  // decided matches still count
}

TEST_CASE("patterns use Perl's syntax as Net::Server's do", "[access]") {
  CHECK(AccessRules({"\\A127\\.0\\.0\\.\\d+\\z"}, {}, {}, {}).allows("127.0.0.9", false));
  CHECK(AccessRules({"(?i)::FFFF:.*"}, {}, {}, {}).allows("::ffff:10.0.0.1", false));
  CHECK(AccessRules({"[[:digit:].]+"}, {}, {}, {}).allows("10.0.0.1", false));
}
