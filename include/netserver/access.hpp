#pragma once
/// Access control with Net::Server's rules and order: `allow` / `deny` (Perl-syntax regular
/// expressions matched against the whole peer address) and `cidr_allow` / `cidr_deny` (IPv4 and
/// IPv6 networks).

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace netserver {

/// An IPv4 or IPv6 network: "10.0.0.0/8", "::1/128", "192.0.2.7" (a single address).
struct Network {
  int family = 0;                          ///< AF_INET or AF_INET6
  std::array<unsigned char, 16> bytes{};   ///< address, network byte order
  int prefix = 0;                          ///< bits that must match

  /// Parses `text`; on failure returns false and says why in `problem`.
  static bool parse(std::string_view text, Network& out, std::string& problem);
  /// True when `address` (an IPv4 or IPv6 literal; IPv4-mapped IPv6 counts as IPv4) is inside.
  bool contains(std::string_view address) const;
};

/// Net::Server's allow/deny rules for peer addresses: regular expressions and CIDR networks.
class AccessRules {
 public:
  AccessRules() = default;
  /// Rules from the four lists. Throws std::invalid_argument for a bad regex or network (the
  /// configuration validates them first, with file and line).
  AccessRules(const std::vector<std::string>& allow, const std::vector<std::string>& deny,
              const std::vector<std::string>& cidr_allow, const std::vector<std::string>& cidr_deny);

  /// Net::Server's order: without any rule everyone is allowed; a unix-socket client is always
  /// allowed; then a `deny` or `cidr_deny` match refuses, an `allow` or `cidr_allow` match
  /// admits, and anyone else is refused. `address` is the peer's IP without port. A pattern whose
  /// matching would backtrack without bound (`((a|.)*)*b`) is cut off after a number of steps
  /// that grows with the address and pattern sizes only; that peer is then refused (the rule could
  /// not be decided) and the pattern is logged once as a warning.
  bool allows(std::string_view address, bool unix_socket) const;
  /// True when no rule is configured.
  bool empty() const { return allow_.empty() && deny_.empty() && cidr_allow_.empty() && cidr_deny_.empty(); }

  /// A compiled `allow` / `deny` pattern (opaque: Boost.Regex stays out of this header).
  struct Pattern;

 private:
  std::vector<std::shared_ptr<Pattern>> allow_, deny_;
  std::vector<Network> cidr_allow_, cidr_deny_;
};

/// "" when every entry compiles as a regular expression, else what is wrong with the first bad one.
std::string check_regexes(const std::vector<std::string>& patterns);
/// "" when every entry is a network, else what is wrong with the first bad one.
std::string check_networks(const std::vector<std::string>& networks);

}  // namespace netserver
