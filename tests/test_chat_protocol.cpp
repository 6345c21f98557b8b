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

TEST_CASE("chat protocol: nicks compare without ASCII case", "[chat-protocol]") {
  CHECK(chat::same_nick("Alice", "aLICE"));
  CHECK_FALSE(chat::same_nick("alice", "alicia"));
  CHECK_FALSE(chat::same_nick("", "a"));
  CHECK(chat::same_nick("Jos\xc3\xa9", "jos\xc3\xa9"));
  CHECK(chat::nick_key("AlIcE") == "alice");
  CHECK(chat::nick_key("Jos\xc3\xa9") == chat::nick_key("jOS\xc3\xa9"));
  CHECK(chat::nick_key("Jos\xc3\xa9") != chat::nick_key("jos\xc3\x89"));
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
}
