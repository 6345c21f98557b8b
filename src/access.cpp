#include "netserver/access.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <stdexcept>
#include <utility>

#include <boost/regex.hpp>
#include <fmt/format.h>

#include "netserver/log.hpp"

namespace netserver {

namespace {

// Parses an IP literal into network byte order; IPv4-mapped IPv6 becomes IPv4 (and `mapped` says
// so, when asked: a prefix length written for it counts the 96 bits of ::ffff:0:0/96 too).
bool parse_address(std::string_view text, int& family, std::array<unsigned char, 16>& bytes, bool* mapped = nullptr) {
  const std::string address(text);
  bytes.fill(0);
  if (::inet_pton(AF_INET, address.c_str(), bytes.data()) == 1) {
    family = AF_INET;
    return true;
  }
  in6_addr v6{};
  if (::inet_pton(AF_INET6, address.c_str(), &v6) != 1) return false;
  if (IN6_IS_ADDR_V4MAPPED(&v6)) {
    if (mapped) *mapped = true;
    family = AF_INET;
    std::copy(v6.s6_addr + 12, v6.s6_addr + 16, bytes.begin());
    return true;
  }
  family = AF_INET6;
  std::copy(v6.s6_addr, v6.s6_addr + 16, bytes.begin());
  return true;
}

// Perl syntax, as Net::Server's rules are Perl regexes. Boost.Regex rather than std::regex: it
// bounds the work of one match (a pattern that backtracks exponentially throws instead of holding
// the event loop for minutes) and keeps its backtracking on the heap, not the stack.
boost::regex compile(const std::string& pattern) { return boost::regex(pattern, boost::regex::perl); }

}  // namespace

struct AccessRules::Pattern {
  std::string text;
  boost::regex regex;
  bool warned = false;  // the "cannot decide" warning is logged once per pattern

  // Whether `peer` matches; `undecided` when the match was cut off.
  bool matches(const std::string& peer, bool undecided_means) {
    try {
      return boost::regex_match(peer, regex);
    } catch (const std::runtime_error&) {  // boost::regex_error: the complexity bound
      if (!std::exchange(warned, true))
        log::warning("access rule \"{}\": matching {} backtracks without bound and was cut off; such peers are "
                     "refused. Make each choice in the pattern unambiguous", text, peer);
      return undecided_means;
    }
  }
};

namespace {

template <class Rule>
std::vector<Rule> build(const std::vector<std::string>& texts) {
  std::vector<Rule> rules;
  for (const std::string& text : texts) {
    if constexpr (std::is_same_v<Rule, Network>) {
      Network network;
      std::string problem;
      if (!Network::parse(text, network, problem)) throw std::invalid_argument(problem);
      rules.push_back(network);
    } else {
      try {
        rules.push_back(std::make_shared<AccessRules::Pattern>(AccessRules::Pattern{text, compile(text)}));
      } catch (const std::runtime_error& error) {
        throw std::invalid_argument(error.what());
      }
    }
  }
  return rules;
}

}  // namespace

bool Network::parse(std::string_view text, Network& out, std::string& problem) {
  const std::size_t slash = text.find('/');
  const std::string_view address = text.substr(0, slash);
  bool mapped = false;
  if (!parse_address(address, out.family, out.bytes, &mapped)) {
    problem = fmt::format("\"{}\" is not an IPv4 or IPv6 address", address);
    return false;
  }
  // ::ffff:10.0.0.0/104 is 10.0.0.0/8: peers reach the rules as IPv4, mapped or not.
  const int skipped = mapped ? 96 : 0;
  const int bits = out.family == AF_INET ? 32 : 128;
  out.prefix = bits;
  if (slash != std::string_view::npos) {
    const std::string_view prefix = text.substr(slash + 1);
    int length = -1;
    auto [end, error] = std::from_chars(prefix.data(), prefix.data() + prefix.size(), length);
    if (prefix.empty() || error != std::errc() || end != prefix.data() + prefix.size() || length < skipped ||
        length > skipped + bits) {
      problem = fmt::format("\"{}\": the prefix length must be {} to {}{}", text, skipped, skipped + bits,
                            mapped ? " for an IPv4-mapped address" : "");
      return false;
    }
    out.prefix = length - skipped;
  }
  return true;
}

bool Network::contains(std::string_view address) const {
  int peer_family = 0;
  std::array<unsigned char, 16> peer{};
  if (!parse_address(address, peer_family, peer) || peer_family != family) return false;
  const int whole = prefix / 8;
  if (!std::equal(bytes.begin(), bytes.begin() + whole, peer.begin())) return false;
  const int rest = prefix % 8;
  if (rest == 0) return true;
  const unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
  return (bytes[static_cast<std::size_t>(whole)] & mask) == (peer[static_cast<std::size_t>(whole)] & mask);
}

AccessRules::AccessRules(const std::vector<std::string>& allow, const std::vector<std::string>& deny,
                         const std::vector<std::string>& cidr_allow, const std::vector<std::string>& cidr_deny)
    : allow_(build<std::shared_ptr<Pattern>>(allow)),
      deny_(build<std::shared_ptr<Pattern>>(deny)),
      cidr_allow_(build<Network>(cidr_allow)),
      cidr_deny_(build<Network>(cidr_deny)) {}

bool AccessRules::allows(std::string_view address, bool unix_socket) const {
  if (empty() || unix_socket) return true;
  const std::string peer(address);
  // An undecided rule refuses: it counts as a match for deny, as no match for allow.
  auto denied_by = [&](const std::shared_ptr<Pattern>& rule) { return rule->matches(peer, true); };
  auto allowed_by = [&](const std::shared_ptr<Pattern>& rule) { return rule->matches(peer, false); };
  auto inside = [&](const Network& network) { return network.contains(peer); };
  if (std::any_of(deny_.begin(), deny_.end(), denied_by) || std::any_of(cidr_deny_.begin(), cidr_deny_.end(), inside))
    return false;
  return std::any_of(allow_.begin(), allow_.end(), allowed_by) ||
         std::any_of(cidr_allow_.begin(), cidr_allow_.end(), inside);
}

std::string check_regexes(const std::vector<std::string>& patterns) {
  for (const std::string& pattern : patterns) {
    try {
      compile(pattern);
    } catch (const std::runtime_error& error) {  // boost::regex_error
      return fmt::format("\"{}\" is not a valid regular expression: {}", pattern, error.what());
    }
  }
  return "";
}

std::string check_networks(const std::vector<std::string>& networks) {
  for (const std::string& text : networks) {
    Network network;
    std::string problem;
    if (!Network::parse(text, network, problem)) return problem;
  }
  return "";
}

}  // namespace netserver
