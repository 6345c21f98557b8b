// The PROXY protocol header parser (src/proxy_protocol.*), fed the input at once, one byte at a
// time and in uneven pieces. It never takes more than it was fed, never a byte past the header,
// says the same thing however the bytes come, and reports only consistent headers and printable,
// bounded reasons.

#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "proxy_protocol.hpp"
#include "fuzz_check.hpp"

namespace {

using netserver::ProxyHeader;
using netserver::ProxyHeaderParser;
using Status = ProxyHeaderParser::Status;

struct Outcome {
  Status status = Status::need_more;
  std::size_t consumed = 0;
  ProxyHeader header;
  std::string problem;
};

// Feeds `bytes` in pieces whose sizes come from `piece` (called with the offset), checking each step.
template <class Piece>
Outcome feed(std::string_view bytes, Piece piece) {
  ProxyHeaderParser parser;
  Outcome outcome;
  std::size_t offset = 0;
  while (offset < bytes.size() && parser.status() == Status::need_more) {
    const std::size_t size = std::min<std::size_t>(piece(offset), bytes.size() - offset);
    const auto progress = parser.feed(bytes.substr(offset, size));
    FUZZ_CHECK(progress.consumed <= size);
    FUZZ_CHECK(progress.status == parser.status());
    if (progress.status == Status::need_more) FUZZ_CHECK(progress.consumed == size);
    if (progress.status == Status::malformed) FUZZ_CHECK(progress.consumed == 0);
    outcome.consumed += progress.consumed;
    offset += size;
  }
  outcome.status = parser.status();
  outcome.header = parser.header();
  outcome.problem = parser.problem();
  if (outcome.status != Status::need_more) {  // once decided, nothing more is taken
    const auto after = parser.feed(bytes);
    FUZZ_CHECK(after.consumed == 0 && after.status == outcome.status);
  }
  return outcome;
}

bool printable(const std::string& text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
}

void check_addresses(const ProxyHeader& header) {
  if (!header.has_addresses) {
    FUZZ_CHECK(header.source_length == 0 && header.destination_length == 0);
    FUZZ_CHECK(header.source_text().empty() && header.destination_text().empty());
    return;
  }
  FUZZ_CHECK(header.command == ProxyHeader::Command::proxy);
  FUZZ_CHECK(header.source.ss_family == header.destination.ss_family);
  FUZZ_CHECK(header.source_length > 0 && header.source_length <= sizeof(sockaddr_storage));
  FUZZ_CHECK(header.destination_length > 0 && header.destination_length <= sizeof(sockaddr_storage));
  FUZZ_CHECK(!header.source_text().empty() && printable(header.source_text()));
  FUZZ_CHECK(!header.destination_text().empty() && printable(header.destination_text()));
  if (header.source.ss_family == AF_UNIX) {
    FUZZ_CHECK(header.version == 2 && header.source_text().starts_with("unix:"));
  } else {
    FUZZ_CHECK(header.source.ss_family == AF_INET || header.source.ss_family == AF_INET6);
  }
}

// A decided outcome on its own terms.
void check_outcome(const Outcome& outcome, std::size_t fed) {
  FUZZ_CHECK(outcome.consumed <= fed);
  switch (outcome.status) {
    case Status::need_more:
      FUZZ_CHECK(outcome.consumed == fed);
      FUZZ_CHECK(fed < std::max(ProxyHeaderParser::v1_max_bytes, ProxyHeaderParser::default_max_v2_bytes));
      break;
    case Status::malformed:
      FUZZ_CHECK(!outcome.problem.empty() && outcome.problem.size() <= 400 && printable(outcome.problem));
      break;
    case Status::done:
      FUZZ_CHECK(outcome.header.version == 1 || outcome.header.version == 2);
      if (outcome.header.version == 1) {
        FUZZ_CHECK(outcome.consumed >= 15 && outcome.consumed <= ProxyHeaderParser::v1_max_bytes);
        FUZZ_CHECK(!outcome.header.ssl.present && outcome.header.authority.empty());
      } else {
        FUZZ_CHECK(outcome.consumed >= ProxyHeaderParser::v2_fixed_bytes);
        FUZZ_CHECK(outcome.consumed <= ProxyHeaderParser::default_max_v2_bytes);
      }
      FUZZ_CHECK(outcome.header.authority.size() <= 255);
      if (outcome.header.ssl_verified()) FUZZ_CHECK(outcome.header.ssl.present && outcome.header.ssl.verify == 0);
      check_addresses(outcome.header);
      break;
  }
}

void check_same(const Outcome& a, const Outcome& b) {
  FUZZ_CHECK(a.status == b.status);
  if (a.status != Status::done) return;
  FUZZ_CHECK(a.consumed == b.consumed);
  FUZZ_CHECK(a.header.version == b.header.version && a.header.command == b.header.command);
  FUZZ_CHECK(a.header.has_addresses == b.header.has_addresses);
  FUZZ_CHECK(a.header.source_text() == b.header.source_text() && a.header.destination_text() == b.header.destination_text());
  FUZZ_CHECK(a.header.authority == b.header.authority && a.header.ssl_verified() == b.header.ssl_verified());
  FUZZ_CHECK(a.header.checksum_checked == b.header.checksum_checked);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  const Outcome at_once = feed(bytes, [&](std::size_t) { return bytes.size(); });
  check_outcome(at_once, size);
  const Outcome bytewise = feed(bytes, [](std::size_t) { return std::size_t{1}; });
  check_outcome(bytewise, size);
  check_same(at_once, bytewise);
  // Uneven pieces: 1 to 17 bytes, chosen by the byte at the offset.
  const Outcome pieces = feed(bytes, [&](std::size_t offset) { return 1 + static_cast<unsigned char>(bytes[offset]) % 17; });
  check_outcome(pieces, size);
  check_same(at_once, pieces);
  // A decided header leaves everything after it: feeding only the header gives the same.
  if (at_once.status == Status::done) {
    const Outcome header_only = feed(bytes.substr(0, at_once.consumed), [&](std::size_t) { return bytes.size(); });
    check_same(at_once, header_only);
  }
  return 0;
}
