// The edge's per-connection costs in isolation: parsing a PROXY header (src/proxy_protocol.*) and
// one acquire + release of the per-address table (src/address_limits.*). Each figure is the
// median of several timed runs, with the fastest and slowest run: the machine is shared.
// Usage: edge_microbench [RUNS]   (default 9)

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "address_limits.hpp"
#include "proxy_protocol.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using netserver::AddressKey;
using netserver::AddressLimits;
using netserver::AddressLimitSettings;
using netserver::ProxyHeaderParser;

volatile std::size_t sink;  // keeps results alive so the compiler cannot drop the work

// ns per operation of `runs` timed runs of `operations` calls each: median, min, max.
void measure(const char* name, int runs, std::size_t operations, const std::function<void(std::size_t)>& batch) {
  batch(operations / 10);  // warm caches and the table
  std::vector<double> per_op;
  for (int run = 0; run < runs; ++run) {
    const auto start = Clock::now();
    batch(operations);
    const std::chrono::duration<double, std::nano> took = Clock::now() - start;
    per_op.push_back(took.count() / static_cast<double>(operations));
  }
  std::sort(per_op.begin(), per_op.end());
  std::printf("%-58s %8.1f ns  (min %.1f, max %.1f, %d runs of %zu)\n", name, per_op[per_op.size() / 2], per_op.front(),
              per_op.back(), runs, operations);
}

std::string big_endian(std::size_t value, int bytes) {
  std::string out;
  for (int i = bytes - 1; i >= 0; --i) out += static_cast<char>((value >> (8 * i)) & 0xff);
  return out;
}

std::string v2_header(const std::string& tlvs) {
  std::string body;
  for (const char* ip : {"192.0.2.1", "198.51.100.2"}) {
    in_addr address{};
    ::inet_pton(AF_INET, ip, &address);
    body.append(reinterpret_cast<const char*>(&address), 4);
  }
  body += big_endian(56324, 2) + big_endian(443, 2) + tlvs;
  return std::string("\r\n\r\n\0\r\nQUIT\n", 12) + "\x21\x11" + big_endian(body.size(), 2) + body;
}

std::string tlv(unsigned type, const std::string& value) { return static_cast<char>(type) + big_endian(value.size(), 2) + value; }

// What HAProxy sends with send-proxy-v2-ssl-cn and proxy-v2-options crc32c,authority.
std::string v2_header_with_tlvs() {
  const std::string ssl =
      tlv(0x20, std::string("\x07\0\0\0\0", 5) + tlv(0x21, "TLSv1.3") + tlv(0x22, "alice"));
  std::string header = v2_header(tlv(0x02, "service.example.com") + ssl + tlv(0x03, std::string(4, '\0')));
  const std::size_t at = header.size() - 4;
  header.replace(at, 4, big_endian(netserver::crc32c(header), 4));
  return header;
}

// One parser per connection, as in the accept path; `named`: also the client's text form, which
// the accept path needs for peer() (and would spend on the socket's own peer without a header).
void parse_each(const std::string& header, std::size_t count, bool named = false) {
  std::size_t total = 0;
  for (std::size_t i = 0; i < count; ++i) {
    ProxyHeaderParser parser;
    total += parser.feed(header).consumed + parser.header().source_length;
    if (named) total += parser.header().source_text().size();
  }
  sink = total;
}

AddressKey key_of(std::uint32_t ip) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(ip);
  return *AddressKey::of(reinterpret_cast<const sockaddr*>(&address), sizeof address, 64);
}

std::size_t not_granted = 0;  // a refusal takes a shorter path: the figures are for grants only

void acquire_release(AddressLimits& limits, const std::vector<AddressKey>& keys, std::size_t count) {
  for (std::size_t i = 0; i < count; ++i) {
    const auto admission = limits.try_acquire(keys[i % keys.size()]);
    not_granted += admission.verdict != AddressLimits::Verdict::granted;
    limits.release(admission);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 9;
  const std::string v1 = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n";
  const std::string v2 = v2_header("");
  const std::string v2_tlvs = v2_header_with_tlvs();
  measure("PROXY v1 TCP4 header, parsed", runs, 2'000'000, [&](std::size_t n) { parse_each(v1, n); });
  measure("PROXY v2 TCP4 header (28 bytes), parsed", runs, 2'000'000, [&](std::size_t n) { parse_each(v2, n); });
  measure("PROXY v2 TCP4 header, parsed + source_text()", runs, 2'000'000, [&](std::size_t n) { parse_each(v2, n, true); });
  const std::string with_tlvs_name = "PROXY v2 + AUTHORITY, SSL, CRC32C (" + std::to_string(v2_tlvs.size()) + " bytes), parsed";
  measure(with_tlvs_name.c_str(), runs, 2'000'000, [&](std::size_t n) { parse_each(v2_tlvs, n); });
  measure("CRC32C of 64 bytes", runs, 5'000'000, [&](std::size_t n) {
    const std::string bytes(64, 'x');
    std::uint32_t crc = 0;
    for (std::size_t i = 0; i < n; ++i) crc = netserver::crc32c(bytes, crc);
    sink = crc;
  });

  measure("address key of a sockaddr_in", runs, 10'000'000, [&](std::size_t n) {
    std::size_t total = 0;
    for (std::size_t i = 0; i < n; ++i) total += key_of(0x7f000002 + static_cast<std::uint32_t>(i & 255)).bytes[3];
    sink = total;
  });
  AddressLimitSettings counting;
  counting.max_connections = 1000;
  AddressLimits count_only(counting);
  const std::vector<AddressKey> one_key = {key_of(0x7f000002)};
  measure("acquire + release, max_connections, one address", runs, 2'000'000,
          [&](std::size_t n) { acquire_release(count_only, one_key, n); });
  std::vector<AddressKey> many_keys;
  for (std::uint32_t i = 0; i < 8000; ++i) many_keys.push_back(key_of(0x0a000000 + i * 7919));
  measure("acquire + release, max_connections, 8000 addresses", runs, 2'000'000,
          [&](std::size_t n) { acquire_release(count_only, many_keys, n); });
  AddressLimitSettings both = counting;
  both.rate = 1e9;  // one per ns, a second's burst: never refuses, so this is the cost of the bucket
  AddressLimits count_and_rate(both);
  measure("acquire + release, max_connections + rate, one address", runs, 2'000'000,
          [&](std::size_t n) { acquire_release(count_and_rate, one_key, n); });

  // Two processes on the same address at once: the shard lock's cache line moves between cores.
  measure("acquire + release, 2 processes at once on one address", runs, 1'000'000, [&](std::size_t n) {
    const pid_t child = ::fork();
    if (child == 0) {
      acquire_release(count_only, one_key, n);
      ::_exit(0);
    }
    acquire_release(count_only, one_key, n);
    ::waitpid(child, nullptr, 0);
    count_only.reclaim(child);  // as a parent does for every child it reaps
  });
  std::printf("open after the runs: %u; acquisitions not granted in this process: %zu (both must be 0)\n",
              count_only.open_connections(one_key[0]), not_granted);
  return count_only.open_connections(one_key[0]) == 0 && not_granted == 0 ? 0 : 1;
}
