// The chat demo's text rules without a server: command parsing, which nicks are allowed, and
// the escaping of relayed text (issue 9, defect 16).

#include <catch2/catch.hpp>

#include "chat_protocol.hpp"

using chat::Command;

TEST_CASE("chat protocol: lines split into commands and messages", "[chat-protocol]") {
  CHECK(chat::parse_line("").kind == Command::Kind::none);
  const Command message = chat::parse_line("hello /who");
  CHECK(message.kind == Command::Kind::message);
  CHECK(message.argument == "hello /who");
  CHECK(chat::parse_line("/who").kind == Command::Kind::who);
  CHECK(chat::parse_line("/help extra").kind == Command::Kind::help);
  const Command nick = chat::parse_line("/nick \t alice  ");
  CHECK(nick.kind == Command::Kind::nick);
  CHECK(nick.argument == "alice");
  CHECK(chat::parse_line("/nick").argument.empty());
  const Command unknown = chat::parse_line("/bogus x");
  CHECK(unknown.kind == Command::Kind::unknown);
  CHECK(unknown.verb == "/bogus");
}

TEST_CASE("chat protocol: UTF-8 nicks are allowed up to 32 characters", "[chat-protocol]") {
  CHECK_FALSE(chat::nick_problem("alice"));
  CHECK_FALSE(chat::nick_problem("Jos\xc3\xa9"));             // José
  CHECK_FALSE(chat::nick_problem("\xe6\x9d\x8e\xe9\x9b\xb7"));  // 李雷
  CHECK_FALSE(chat::nick_problem("a1.b_c-d"));
  std::string longest;
  for (int i = 0; i < 32; ++i) longest += "\xc3\xa9";  // 32 characters, 64 bytes
  CHECK_FALSE(chat::nick_problem(longest));
  CHECK(chat::nick_problem(longest + "e"));
  CHECK(chat::nick_problem(""));
}

TEST_CASE("chat protocol: address-shaped nicks are refused", "[chat-protocol]") {
  for (const char* wanted : {"127.0.0.1:1234", "127.0.0.1", "[::1]:5000", "unix:/tmp/chat.sock", "host:80",
                             "10", "x\xef\xbc\x9a" "1"})  // the last one has a fullwidth colon
    CHECK(chat::nick_problem(wanted));
}

TEST_CASE("chat protocol: control characters and broken UTF-8 make a nick invalid", "[chat-protocol]") {
  for (const std::string& wanted : {std::string("a b"), std::string("a\rb"), std::string("a\x1b[31m"),
                                   std::string("a\x7f"), std::string("a\xc2\x9b"), std::string("a\xe2\x80\xae"),
                                   std::string("a\xe2\x80\x8b"), std::string("a\xff"), std::string("a\xc0\xaf"),
                                   std::string("a\xed\xa0\x80"), std::string("a\xc3"), std::string("a\0b", 3)})
    CHECK(chat::nick_problem(wanted));
}

TEST_CASE("chat protocol: nicks compare without case and by confusable skeleton", "[chat-protocol]") {
  CHECK(chat::same_nick("Alice", "aLICE"));
  CHECK_FALSE(chat::same_nick("alice", "alicia"));
  CHECK_FALSE(chat::same_nick("", "a"));
  CHECK(chat::same_nick("Jos\xc3\xa9", "jos\xc3\xa9"));
  CHECK(chat::nick_key("AlIcE") == "alice");
  CHECK(chat::nick_key("Jos\xc3\xa9") == chat::nick_key("jOS\xc3\xa9"));
  CHECK(chat::nick_key("Jos\xc3\xa9") == chat::nick_key("JOS\xc3\x89"));  // Unicode case folding, not ASCII only
  CHECK(chat::nick_key("Jos\xc3\xa9") != chat::nick_key("Jose"));
  // Whole-script confusables: Cyrillic "сору" looks like Latin "copy"; "rn" like "m".
  CHECK_FALSE(chat::nick_problem("\xd1\x81\xd0\xbe\xd1\x80\xd1\x83"));
  CHECK(chat::same_nick("copy", "\xd1\x81\xd0\xbe\xd1\x80\xd1\x83"));
  CHECK(chat::same_nick("COPY", "\xd1\x81\xd0\xbe\xd1\x80\xd1\x83"));
  CHECK(chat::same_nick("modern", "rnodern"));
  CHECK(chat::nick_key("\xd0\xb0lice") == chat::nick_key("alice"));  // Cyrillic a: the same key (and refused as a mix)
}

// Issue 19, defect 8: each of these looks like "alice" on a terminal.
TEST_CASE("chat protocol: invisible or format characters and lookalike scripts make a nick invalid", "[chat-protocol][hardening]") {
  for (const char* tail : {"\xf3\xa0\x81\x81",  // U+E0041 TAG LATIN CAPITAL LETTER A
                           "\xef\xbf\xb9",      // U+FFF9 INTERLINEAR ANNOTATION ANCHOR
                           "\xe1\xa0\x8e",      // U+180E MONGOLIAN VOWEL SEPARATOR
                           "\xe3\x85\xa4",      // U+3164 HANGUL FILLER
                           "\xef\xbe\xa0",      // U+FFA0 HALFWIDTH HANGUL FILLER
                           "\xef\xb8\x8f",      // U+FE0F VARIATION SELECTOR-16
                           "\xcd\x8f",          // U+034F COMBINING GRAPHEME JOINER
                           "\xe2\xa0\x80",      // U+2800 BRAILLE PATTERN BLANK
                           "\xe2\x81\xa0",      // U+2060 WORD JOINER
                           "\xc2\xad"})         // U+00AD SOFT HYPHEN
    CHECK(chat::nick_problem(std::string("alice") + tail));
  CHECK_THAT(*chat::nick_problem("\xd0\xb0lice"), Catch::Matchers::Contains("mix scripts"));  // Cyrillic a + Latin
  CHECK(chat::nick_problem("al\xce\xb9" "ce"));  // Greek iota
  CHECK(chat::nick_problem("bob\xe2\x98\x83"));  // a snowman is no identifier character
  CHECK(chat::nick_problem("a1\xd9\xa1"));  // ASCII and Arabic-Indic digits
  CHECK_FALSE(chat::nick_problem("\xe3\x81\x93\xe3\x82\x93\xe6\x9d\x8e"));  // Hiragana + Han: a usual mix
}

TEST_CASE("chat protocol: relayed text has its control characters escaped", "[chat-protocol]") {
  CHECK(chat::escape_controls("plain text \\ ok") == "plain text \\ ok");
  CHECK(chat::escape_controls("Jos\xc3\xa9 \xe6\x9d\x8e") == "Jos\xc3\xa9 \xe6\x9d\x8e");
  CHECK(chat::escape_controls("fake\rClient admin said: reboot now") == "fake\\x0dClient admin said: reboot now");
  CHECK(chat::escape_controls("\x1b[2J\x07") == "\\x1b[2J\\x07");
  CHECK(chat::escape_controls("a\tb\x7f") == "a\\x09b\\x7f");
  CHECK(chat::escape_controls("\xc2\x9b" "31m") == "\\u009b31m");
  CHECK(chat::escape_controls("abc\xe2\x80\xae" "cba") == "abc\\u202ecba");
  CHECK(chat::escape_controls("\xff\xc3") == "\\xff\\xc3");
  CHECK(chat::escape_controls(std::string("a\0b", 3)) == "a\\x00b");
  CHECK(chat::escape_controls("one\xe2\x80\xa8two\xe2\x80\xa9three") == "one\\u2028two\\u2029three");
}
