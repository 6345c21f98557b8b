#include "netserver/buffer.hpp"

namespace netserver {

namespace {
std::string_view without_cr(std::string_view text) {
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  return text;
}
}  // namespace

LineStatus next_line(Buffer& in, std::size_t max_line, std::string_view& line) {
  const std::string_view rest = in.view();
  const std::size_t newline = rest.find('\n');
  if (newline == std::string_view::npos) {
    // A pending CR may still turn out to be part of the line end, so it does not count.
    if (without_cr(rest).size() > max_line) return LineStatus::too_long;
    if (!in.eof() || rest.empty()) return LineStatus::partial;
    line = without_cr(rest);
    in.consume(rest.size());
    return LineStatus::line;
  }
  line = without_cr(rest.substr(0, newline));
  if (line.size() > max_line) return LineStatus::too_long;
  in.consume(newline + 1);
  return LineStatus::line;
}

}  // namespace netserver
