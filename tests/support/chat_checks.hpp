#pragma once
// Checks on the chat demo shared by the personality tests.

#include <catch2/catch.hpp>

#include <string>

#include "harness.hpp"

namespace harness {

/// Without a bus the chat room is this process: under `personality` (one client per process), a
/// broadcast from one of two clients reaches nobody, and /who lists only the asker.
inline void check_chat_room_is_one_process(ServerProcess& server, const std::string& personality) {
  using Catch::Matchers::Contains;
  Client a(server.port()), b(server.port());
  for (Client* c : {&a, &b}) {
    REQUIRE(c->read_line() == "Welcome, to the server!");
    REQUIRE(c->read_line());
  }
  a.send("hello b?\r\n/who\r\n");
  const auto who = a.read_line();
  REQUIRE(who);
  CHECK_THAT(*who, Contains("1 client(s) in this process") && Contains("personality " + personality));
  CHECK_THAT(*a.read_line(), Contains("<- you"));
  CHECK(b.silent_for(0.3s));  // no "Please welcome", no "Client ... said"
}

}  // namespace harness
