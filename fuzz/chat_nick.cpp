// The chat's nick rules with their Unicode checks (ICU's UTS #39 checker and skeletons), and the
// rules re-applied to what arrives through the bus. A valid nick shows as itself on one line and
// is its own kind of label; a relayed line is one line, made safe once and for all.

#include <cstdint>
#include <string>

#include "chat_protocol.hpp"
#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string key = chat::nick_key(text);
  FUZZ_CHECK(chat::same_nick(text, text));
  if (!chat::nick_problem(text)) {
    FUZZ_CHECK(chat::escape_controls(text) == text);
    FUZZ_CHECK(text.find(':') == std::string_view::npos && text.find(' ') == std::string_view::npos);
    FUZZ_CHECK(chat::is_member_label(text));
    FUZZ_CHECK(!key.empty());
  }
  if (const auto line = chat::relayed_line(text)) {
    FUZZ_CHECK(line->size() >= 2 && line->ends_with("\r\n"));
    for (std::size_t i = 0; i + 2 < line->size(); ++i)
      FUZZ_CHECK(static_cast<unsigned char>((*line)[i]) >= 0x20 && (*line)[i] != 0x7f);
    FUZZ_CHECK(chat::relayed_line(*line) == line);  // applying the rules again changes nothing
  }
  return 0;
}
