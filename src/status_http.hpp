#pragma once
/// The status listener's protocol: a small, strict HTTP/1.1 server written as a Handler, which
/// the toolkit runs in the process that owns the listeners, beside the user's protocol.
///
/// GET and HEAD of /metrics, /status and /status.json; keep-alive (HTTP/1.1's default;
/// "Connection: close" is honoured; HTTP/1.0 closes after its answer); pipelined requests are
/// answered in order, and while a client leaves more than `max_queued_output` unread, its next
/// requests wait. Anything else gets an error status and the connection closes: 400 (malformed),
/// 403 (a peer that may not ask), 404 (another path), 405 (another method), 408 (a request not
/// complete within request_timeout), 413 (a body), 431 (a head over max_request_bytes), 505
/// (another HTTP version). Only loopback and unix-socket peers may ask, and the networks given.

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "metrics_exposition.hpp"
#include "netserver/access.hpp"
#include "netserver/handler.hpp"
#include "netserver/options.hpp"

namespace netserver {

/// The bounds of one connection.
struct StatusHttpLimits {
  std::size_t max_request_bytes = 8 * 1024;               ///< request line and headers, blank line included
  Duration request_timeout = std::chrono::seconds(5);     ///< from a request's first byte to its blank line
  Duration idle_timeout = std::chrono::seconds(30);       ///< a kept-alive connection waiting for a request
  std::size_t max_queued_output = 256 * 1024;             ///< pipelined requests wait while more is unsent
};

/// The three pages, rendered per request (in the serving process's loop).
struct StatusPages {
  std::function<std::string()> metrics;  ///< Prometheus text format 0.0.4
  std::function<std::string()> text;     ///< the scoreboard for people
  std::function<std::string()> json;     ///< the scoreboard for programs
};

/// The pages of metrics_exposition.hpp over `input`, which is called once per request (the
/// process table changes between requests).
StatusPages status_pages(std::function<StatusInput()> input);

class StatusHttpHandler final : public Handler {
 public:
  /// `cidr_allow`: networks allowed besides loopback (status.cidr_allow; already validated).
  StatusHttpHandler(StatusPages pages, const std::vector<std::string>& cidr_allow, StatusHttpLimits limits = {});

  void on_connect(Session& session) override;
  void on_input(Session& session, Buffer& input) override;
  void on_timeout(Session& session) override;

 private:
  struct Connection;
  bool allowed(const Session& session) const;
  void answer(Session& session, Connection& connection, std::string_view head);
  void respond(Session& session, int status, std::string_view content_type, const std::string& body, bool head_only,
               bool close);
  void fail(Session& session, Connection& connection, int status, std::string_view detail);

  StatusPages pages_;
  AccessRules access_;
  StatusHttpLimits limits_;
};

/// One request's head, parsed.
struct HttpRequest {
  std::string method;
  std::string path;         ///< without the query; from an absolute-form target, the path part
  int minor_version = 1;    ///< HTTP/1.x
  bool close = false;       ///< the client asked to close (or HTTP/1.0)
  bool has_body = false;    ///< a Content-Length above 0 (this server takes none)
};

/// Parses a request head (request line and header lines, without the blank line that ends it;
/// lines end in CRLF or LF). Returns 0 with `request` filled, or the status to answer with (400
/// malformed, 505 another HTTP version), and `detail` saying what was wrong.
int parse_http_request(std::string_view head, HttpRequest& request, std::string& detail);

}  // namespace netserver
