// Line framing: partial lines, CRLF and LF, over-long lines, and a stream split at every position.

#include <catch2/catch.hpp>

#include <netserver/buffer.hpp>

using namespace netserver;

namespace {

struct Framed {
  std::vector<std::string> lines;
  bool too_long = false;
  bool within_limit = true;
};

// Feeds `chunks` through an InputQueue and the line splitter, exactly as a session does.
Framed frame(const std::vector<std::string>& chunks, std::size_t max_line, bool eof_at_end = false) {
  Framed out;
  InputQueue queue(max_line + 2);
  auto consume = [&](Buffer& in) {
    std::string_view line;
    while (!out.too_long) {
      const LineStatus status = next_line(in, max_line, line);
      if (status == LineStatus::partial) return;
      if (status == LineStatus::too_long) out.too_long = true;
      else out.lines.emplace_back(line);
    }
  };
  for (const std::string& chunk : chunks) out.within_limit = queue.feed(chunk, false, consume) && out.within_limit;
  if (eof_at_end) queue.feed({}, true, consume);
  return out;
}

}  // namespace

TEST_CASE("next_line splits at LF and drops one CR before it", "[buffer]") {
  const std::string text = "one\r\ntwo\nthree\r\r\nfo\rur\n";
  Buffer in(text.data(), text.size(), false);
  std::string_view line;
  std::vector<std::string> lines;
  while (next_line(in, 100, line) == LineStatus::line) lines.emplace_back(line);
  CHECK(lines == std::vector<std::string>{"one", "two", "three\r", "fo\rur"});
  CHECK(in.empty());
}

TEST_CASE("a partial line waits and is delivered at EOF", "[buffer]") {
  const std::string text = "done\npartial";
  Buffer in(text.data(), text.size(), false);
  std::string_view line;
  REQUIRE(next_line(in, 100, line) == LineStatus::line);
  CHECK(next_line(in, 100, line) == LineStatus::partial);
  CHECK(in.view() == "partial");

  Buffer at_eof(in.data(), in.size(), true);
  REQUIRE(next_line(at_eof, 100, line) == LineStatus::line);
  CHECK(line == "partial");
  CHECK(next_line(at_eof, 100, line) == LineStatus::partial);
}

TEST_CASE("max_line counts the line without its line end", "[buffer]") {
  std::string_view line;
  const std::string exact = std::string(10, 'x') + "\r\n";
  Buffer fits(exact.data(), exact.size(), false);
  CHECK(next_line(fits, 10, line) == LineStatus::line);

  const std::string over = std::string(11, 'x') + "\n";
  Buffer too_long(over.data(), over.size(), false);
  CHECK(next_line(too_long, 10, line) == LineStatus::too_long);

  const std::string unfinished = std::string(11, 'x');
  Buffer early(unfinished.data(), unfinished.size(), false);
  CHECK(next_line(early, 10, line) == LineStatus::too_long);  // known before its end arrives

  const std::string pending_cr = std::string(10, 'x') + "\r";
  Buffer waiting(pending_cr.data(), pending_cr.size(), false);
  CHECK(next_line(waiting, 10, line) == LineStatus::partial);  // the LF may still come
}

TEST_CASE("a stream split at every position yields the same lines", "[buffer]") {
  const std::string stream = "alpha\r\nbeta\n\r\n\ngamma delta\r\nlast line without CR\nx\n";
  const std::vector<std::string> expected{"alpha", "beta", "", "", "gamma delta", "last line without CR", "x"};
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    for (std::size_t cut2 = cut; cut2 <= stream.size(); ++cut2) {
      INFO("cuts at " << cut << " and " << cut2);
      const Framed framed = frame({stream.substr(0, cut), stream.substr(cut, cut2 - cut), stream.substr(cut2)}, 64);
      REQUIRE(framed.lines == expected);
      REQUIRE_FALSE(framed.too_long);
    }
  }
}

TEST_CASE("a stream fed one byte at a time yields the same lines", "[buffer]") {
  const std::string stream = "one\r\ntwo\nthree";
  std::vector<std::string> bytes;
  for (char c : stream) bytes.emplace_back(1, c);
  CHECK(frame(bytes, 64).lines == std::vector<std::string>{"one", "two"});
  CHECK(frame(bytes, 64, true).lines == std::vector<std::string>{"one", "two", "three"});
}

TEST_CASE("an over-long line is caught however it is split", "[buffer]") {
  const std::string stream = "ok\n" + std::string(40, 'z') + "\nnever\n";
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    INFO("cut at " << cut);
    const Framed framed = frame({stream.substr(0, cut), stream.substr(cut)}, 16);
    CHECK(framed.too_long);
    CHECK(framed.lines == std::vector<std::string>{"ok"});
  }
}

TEST_CASE("InputQueue reports input reaching its limit when nothing consumes it", "[buffer]") {
  InputQueue queue(10);
  auto keep_all = [](Buffer&) {};
  CHECK(queue.feed("12345", false, keep_all));
  CHECK(queue.room() == 5);
  CHECK(queue.feed("6789", false, keep_all));
  CHECK_FALSE(queue.feed("0", false, keep_all));
  auto take_all = [](Buffer& in) { in.consume(in.size()); };
  queue.clear();
  CHECK(queue.feed(std::string(100, 'a'), false, take_all));  // consumed in place: nothing pending
  CHECK(queue.size() == 0);
  CHECK(queue.room() == 0);
}

TEST_CASE("InputQueue hands back what was left followed by the new bytes", "[buffer]") {
  InputQueue queue(100);
  std::vector<std::string> seen;
  auto take_pairs = [&](Buffer& in) {
    seen.emplace_back(in.view());
    in.consume(in.size() - in.size() % 2);
  };
  queue.feed("abc", false, take_pairs);
  queue.feed("de", false, take_pairs);
  queue.feed("f", false, take_pairs);
  CHECK(seen == std::vector<std::string>{"abc", "cde", "ef"});
  CHECK(queue.size() == 0);
}
