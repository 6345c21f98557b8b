// What the bus's input checks cost per message, in isolation (bench/results/bus-hardening.md):
// the bus_secret tag (made by the publisher, checked by every subscribed process), the envelope
// decode, and the chat's rules -- the ICU nick check and skeleton, and the receive filter every
// process runs once per message from Redis (not once per member).
// Usage: bus_hardening_bench [RUNS]   (default 5; prints the median, min and max of the runs)

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "bus/envelope.hpp"
#include "chat_protocol.hpp"

namespace {

std::size_t sink = 0;

// Nanoseconds per call of `operation` over `calls` calls, for each of `runs` runs.
std::vector<double> time_runs(int runs, int calls, const std::function<std::size_t(int)>& operation) {
  std::vector<double> results;
  for (int run = 0; run < runs; ++run) {
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) sink += operation(i);
    results.push_back(std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count() / calls);
  }
  std::sort(results.begin(), results.end());
  return results;
}

void report(const char* what, const std::vector<double>& runs) {
  std::printf("| %s | %.0f | %.0f - %.0f |\n", what, runs[runs.size() / 2], runs.front(), runs.back());
}

}  // namespace

int main(int argc, char** argv) {
  const int runs = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  const std::string payload = "Client 127.0.0.1:54321 said: hello everyone, this is a typical chat line\r\n";
  netserver::bus::Envelope envelope{"host:1234:0123456789abcdef", 7, 1, {}, payload};
  const std::string key = "0123456789abcdef0123456789abcdef";
  const std::string encoded = envelope.encode();
  std::printf("| operation (%zu-byte envelope) | ns (median) | min - max |\n|---|---|---|\n", encoded.size());
  report("bus_secret tag of an envelope (sign, or verify)", time_runs(runs, 100000, [&](int i) {
           envelope.sequence = static_cast<std::uint64_t>(i);
           return netserver::bus::bus_tag(key, "chat:room:chat", envelope.signed_bytes()).size();
         }));
  report("envelope decode", time_runs(runs, 200000, [&](int) { return netserver::bus::Envelope::decode(encoded)->payload.size(); }));
  report("nick_problem (ICU UTS #39 checks), \"José_42\"",
         time_runs(runs, 100000, [](int) { return static_cast<std::size_t>(chat::nick_problem("Jos\xc3\xa9_42").has_value()); }));
  report("nick_key (case fold + skeleton), \"José_42\"",
         time_runs(runs, 100000, [](int) { return chat::nick_key("Jos\xc3\xa9_42").size(); }));
  report("relayed_line of a message with an address label",
         time_runs(runs, 200000, [&](int) { return chat::relayed_line(payload)->size(); }));
  const std::string by_nick = "Client alice said: hello everyone, this is a typical chat line\r\n";
  report("relayed_line of a message with a nick label",
         time_runs(runs, 200000, [&](int) { return chat::relayed_line(by_nick)->size(); }));
  return sink == 42 ? 1 : 0;
}
