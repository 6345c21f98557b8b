#include "netserver/handler.hpp"

#include "netserver/session.hpp"

namespace netserver {

void LineHandler::on_input(Session& session, Buffer& input) {
  std::string_view line;
  while (session.is_open()) {
    switch (next_line(input, session.limits().max_line, line)) {
      case LineStatus::line: on_line(session, line); break;
      case LineStatus::partial: return;
      case LineStatus::too_long: session.close_with_error("line too long"); return;
    }
  }
}

}  // namespace netserver
