// The access rules: a CIDR network and a regular expression from the configuration, matched
// against a peer address. Input: rule text, then after the first NUL byte the peer address.
// A network contains its own address; bad rules are reported, never thrown past the checks.

#include <cstdint>
#include <string>

#include <netserver/access.hpp>

#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const std::size_t nul = input.find('\0');
  const std::string rule(input.substr(0, nul));
  const std::string peer(nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1));

  netserver::Network network;
  std::string problem;
  if (netserver::Network::parse(rule, network, problem)) {
    FUZZ_CHECK(netserver::check_networks({rule}).empty());
    network.contains(peer);
    if (rule.find('/') == std::string::npos) FUZZ_CHECK(network.contains(rule));  // one address holds itself
    const netserver::AccessRules rules({}, {}, {rule}, {});
    rules.allows(peer, false);
  } else {
    FUZZ_CHECK(!netserver::check_networks({rule}).empty());
  }
  // Patterns are the operator's, but a bad one must be a config error, not a crash, and no pattern
  // may hold the loop: matching is bounded (a timeout here is a finding). Peers are addresses, so
  // at most 64 bytes; a config has no 10 KB patterns.
  if (rule.size() <= 256 && netserver::check_regexes({rule}).empty()) {
    const netserver::AccessRules allowing({rule}, {}, {}, {});
    const netserver::AccessRules denying({".*"}, {rule}, {}, {});
    const std::string address = peer.substr(0, 64);
    // A peer the pattern admits as an allow rule, it refuses as a deny rule (an undecided match
    // refuses under both).
    FUZZ_CHECK(!allowing.allows(address, false) || !denying.allows(address, false));
  }
  return 0;
}
