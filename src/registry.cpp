#include "netserver/registry.hpp"

namespace netserver {

void Registry::broadcast(std::string_view bytes, const Session* except) const {
  for_each([&](Session& session) {
    if (&session != except) session.send(bytes);
  });
}

void Session::send_line(std::string_view text) {
  send(text);
  send("\r\n");
}

}  // namespace netserver
