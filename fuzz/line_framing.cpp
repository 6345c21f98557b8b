// The line framing under LineHandler: InputQueue + next_line over arbitrary chunking. Input: a
// byte choosing max_line, a byte seeding the chunk sizes, then the bytes a client sends. However
// the bytes are cut into reads, the handler sees the same lines, and "line too long" at the same
// point, as when they arrive at once.

#include <cstdint>
#include <string>
#include <vector>

#include <netserver/buffer.hpp>

#include "fuzz_check.hpp"

namespace {

struct Seen {
  std::vector<std::string> lines;
  bool too_long = false;
};

// LineHandler::on_input's loop: lines until more input is needed or a line is too long.
void consume_lines(netserver::Buffer& input, std::size_t max_line, Seen& seen) {
  std::string_view line;
  while (!seen.too_long) {
    switch (netserver::next_line(input, max_line, line)) {
      case netserver::LineStatus::line: seen.lines.emplace_back(line); break;
      case netserver::LineStatus::partial: return;
      case netserver::LineStatus::too_long: seen.too_long = true; return;
    }
  }
}

// What a Session does with the reads: feed each, then an empty one at EOF if input is pending.
Seen frame(std::string_view bytes, std::size_t max_line, std::uint8_t seed) {
  netserver::InputQueue queue(max_line + 2);
  Seen seen;
  auto consume = [&](netserver::Buffer& input) { consume_lines(input, max_line, seen); };
  std::uint32_t state = seed * 2654435761u + 1;
  while (!bytes.empty() && !seen.too_long) {
    state = state * 1103515245u + 12345u;
    std::size_t size = 1 + (state >> 16) % 17;
    if (seed == 0) size = bytes.size();  // everything in one read
    const std::size_t room = queue.room();  // the Session never reads past the bound
    if (room != 0 && size > room) size = room;
    if (size > bytes.size()) size = bytes.size();
    if (!queue.feed(bytes.substr(0, size), false, consume)) seen.too_long = true;
    bytes.remove_prefix(size);
  }
  if (!seen.too_long && queue.size() > 0) queue.feed({}, true, consume);
  return seen;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t max_line = 1 + data[0] % 40;
  const std::string_view bytes(reinterpret_cast<const char*>(data) + 2, size - 2);
  const Seen whole = frame(bytes, max_line, 0);
  const Seen chunked = frame(bytes, max_line, static_cast<std::uint8_t>(data[1] | 1));
  FUZZ_CHECK(whole.too_long == chunked.too_long);
  FUZZ_CHECK(whole.lines == chunked.lines);
  for (const std::string& line : whole.lines) FUZZ_CHECK(line.size() <= max_line && line.find('\n') == std::string::npos);
  return 0;
}
