// The chat demo's command parser, nick rules and escaping of relayed text. Escaped text never
// holds a control byte; a valid nick has nothing to escape.

#include <cstdint>
#include <string>

#include "chat_protocol.hpp"
#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view line(reinterpret_cast<const char*>(data), size);
  const chat::Command command = chat::parse_line(line);
  FUZZ_CHECK((command.kind == chat::Command::Kind::none) == line.empty());
  const std::string escaped = chat::escape_controls(line);
  for (const char c : escaped) FUZZ_CHECK(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
  FUZZ_CHECK(chat::escape_controls(escaped) == escaped);  // escaping is idempotent: no control is left
  if (command.kind == chat::Command::Kind::nick && !chat::nick_problem(command.argument)) {
    FUZZ_CHECK(chat::escape_controls(command.argument) == command.argument);
    FUZZ_CHECK(command.argument.find(':') == std::string_view::npos);
    FUZZ_CHECK(chat::same_nick(command.argument, command.argument));
  }
  return 0;
}
