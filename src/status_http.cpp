#include "status_http.hpp"

#include <algorithm>
#include <ctime>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "netserver/session.hpp"

namespace netserver {

namespace {

constexpr std::string_view metrics_type = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view text_type = "text/plain; charset=utf-8";
constexpr std::string_view json_type = "application/json";

std::string_view reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

bool is_token_char(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), is_token_char);
}

// A header value's bytes: visible ASCII, obs-text, space and tab.
bool is_field_value(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte == '\t' || byte >= 0x20;
  }) && text.find('\x7f') == std::string_view::npos;
}

// A request target's bytes: visible ASCII only.
bool is_target(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte > 0x20 && byte < 0x7f;
  });
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string_view trim_blanks(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

// Splits `head` into lines at LF, dropping one CR before it; false for a CR anywhere else.
bool split_lines(std::string_view head, std::vector<std::string_view>& lines) {
  while (!head.empty()) {
    const std::size_t end = head.find('\n');
    std::string_view line = head.substr(0, end);
    head.remove_prefix(end == std::string_view::npos ? head.size() : end + 1);
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line.find('\r') != std::string_view::npos) return false;
    lines.push_back(line);
  }
  return true;
}

// "GET /metrics HTTP/1.1": 0, or the status for what is wrong.
int parse_request_line(std::string_view line, HttpRequest& request, std::string& detail) {
  const std::size_t first = line.find(' ');
  const std::size_t second = first == std::string_view::npos ? first : line.find(' ', first + 1);
  if (second == std::string_view::npos || line.find(' ', second + 1) != std::string_view::npos)
    return detail = "the request line is not METHOD TARGET VERSION", 400;
  const std::string_view method = line.substr(0, first);
  std::string_view target = line.substr(first + 1, second - first - 1);
  const std::string_view version = line.substr(second + 1);
  if (!is_token(method)) return detail = "bad method", 400;
  if (!is_target(target)) return detail = "bad request target", 400;
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (version.size() != 8 || !version.starts_with("HTTP/") || version[6] != '.' || !digit(version[5]) ||
      !digit(version[7]))
    return detail = "bad HTTP version", 400;
  if (version[5] != '1') return detail = fmt::format("{} is not served here (HTTP/1.0 and 1.1 are)", version), 505;
  request.method = std::string(method);
  request.minor_version = version[7] - '0';
  request.close = request.minor_version == 0;
  for (std::string_view scheme : {"http://", "https://"})  // absolute-form: keep the path
    if (lower(target.substr(0, scheme.size())) == scheme) {
      const std::size_t slash = target.find('/', scheme.size());
      target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
  if (!target.starts_with('/') && target != "*") return detail = "bad request target", 400;
  request.path = std::string(target.substr(0, target.find('?')));
  return 0;
}

// The header fields: 0, or the status for what is wrong.
int parse_fields(const std::vector<std::string_view>& lines, HttpRequest& request, std::string& detail) {
  int hosts = 0, lengths = 0;
  bool body = false;
  for (std::size_t i = 1; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    if (line.starts_with(' ') || line.starts_with('\t')) return detail = "folded header line", 400;
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || !is_token(line.substr(0, colon))) return detail = "bad header line", 400;
    const std::string name = lower(line.substr(0, colon));
    const std::string_view value = trim_blanks(line.substr(colon + 1));
    if (!is_field_value(value)) return detail = fmt::format("bad value of {}", name), 400;
    if (name == "host") ++hosts;
    if (name == "transfer-encoding") return detail = "a request with a body (Transfer-Encoding)", 400;
    if (name == "content-length") {
      ++lengths;
      if (value.empty() || !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return detail = "bad Content-Length", 400;
      body = body || value.find_first_not_of('0') != std::string_view::npos;
    }
    if (name == "connection") {
      std::string_view options = value;
      while (!options.empty()) {
        const std::size_t comma = options.find(',');
        if (lower(trim_blanks(options.substr(0, comma))) == "close") request.close = true;
        options.remove_prefix(comma == std::string_view::npos ? options.size() : comma + 1);
      }
    }
  }
  if (hosts > 1 || (hosts == 0 && request.minor_version >= 1)) return detail = "an HTTP/1.1 request needs one Host", 400;
  if (lengths > 1) return detail = "Content-Length given twice", 400;
  request.has_body = body;
  return 0;
}

// Where the head of the first request in `bytes` ends: {head bytes without the blank line,
// bytes up to and including it}; {npos, npos} when no blank line comes within `bound`.
std::pair<std::size_t, std::size_t> find_head(std::string_view bytes, std::size_t bound) {
  const std::string_view window = bytes.substr(0, bound);
  for (std::size_t start = 0; start < window.size();) {
    const std::size_t end = window.find('\n', start);
    if (end == std::string_view::npos) break;
    const std::size_t length = end - start;
    if (length == 0 || (length == 1 && window[start] == '\r')) return {start, end + 1};
    start = end + 1;
  }
  return {std::string_view::npos, std::string_view::npos};
}

// The empty lines a client may send before a request (RFC 9112, 2.2).
std::size_t leading_blank_lines(std::string_view bytes) {
  std::size_t skipped = 0;
  while (true) {
    if (bytes.substr(skipped).starts_with("\r\n")) skipped += 2;
    else if (bytes.substr(skipped).starts_with("\n")) skipped += 1;
    else return skipped;
  }
}

// IMF-fixdate, "Sun, 06 Nov 1994 08:49:37 GMT", independent of the locale.
std::string http_date() {
  static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  ::gmtime_r(&now, &utc);
  return fmt::format("{}, {:02} {} {} {:02}:{:02}:{:02} GMT", days[utc.tm_wday], utc.tm_mday, months[utc.tm_mon],
                     utc.tm_year + 1900, utc.tm_hour, utc.tm_min, utc.tm_sec);
}

// "127.0.0.1:5555" -> "127.0.0.1", "[::1]:5555" -> "::1".
std::string_view host_of(std::string_view peer) {
  std::string_view host = peer.substr(0, peer.rfind(':'));
  if (host.starts_with('[') && host.ends_with(']')) host = host.substr(1, host.size() - 2);
  return host;
}

std::vector<std::string> allowed_networks(const std::vector<std::string>& cidr_allow) {
  std::vector<std::string> networks{"127.0.0.0/8", "::1/128"};
  networks.insert(networks.end(), cidr_allow.begin(), cidr_allow.end());
  return networks;
}

}  // namespace

int parse_http_request(std::string_view head, HttpRequest& request, std::string& detail) {
  std::vector<std::string_view> lines;
  if (!split_lines(head, lines) || lines.empty()) return detail = "a stray CR or an empty head", 400;
  if (const int status = parse_request_line(lines[0], request, detail); status != 0) return status;
  return parse_fields(lines, request, detail);
}

StatusPages status_pages(std::function<StatusInput()> input) {
  return {[input] { return render_prometheus(input()); }, [input] { return render_status_text(input()); },
          [input] { return render_status_json(input()); }};
}

struct StatusHttpHandler::Connection {
  bool in_request = false;  // bytes of a request arrived; its request_timeout runs
  bool closing = false;     // answered with close: what else arrives is dropped
};

StatusHttpHandler::StatusHttpHandler(StatusPages pages, const std::vector<std::string>& cidr_allow,
                                     StatusHttpLimits limits)
    : pages_(std::move(pages)), access_({}, {}, allowed_networks(cidr_allow), {}), limits_(limits) {}

bool StatusHttpHandler::allowed(const Session& session) const {
  const std::string& peer = session.peer();
  return peer.starts_with("unix:") ? access_.allows("", true) : access_.allows(host_of(peer), false);
}

// A peer that may not ask is told so at once, before it sends anything to parse.
void StatusHttpHandler::on_connect(Session& session) {
  Connection& connection = session.state<Connection>();
  if (!allowed(session)) {
    connection.closing = true;
    respond(session, 403, text_type, "403 Forbidden: only loopback, unix-socket and status.cidr_allow peers\n", false,
            true);
    return;
  }
  session.set_timeout(limits_.idle_timeout);
}

void StatusHttpHandler::on_input(Session& session, Buffer& input) {
  Connection& connection = session.state<Connection>();
  while (!input.empty()) {
    if (connection.closing) return input.consume(input.size());
    if (!connection.in_request) {
      input.consume(leading_blank_lines(input.view()));
      if (input.empty()) return;
      connection.in_request = true;
      session.set_timeout(limits_.request_timeout);
    }
    const auto [head_bytes, request_bytes] = find_head(input.view(), limits_.max_request_bytes);
    if (request_bytes == std::string_view::npos) {
      if (input.size() >= limits_.max_request_bytes)
        fail(session, connection, 431, fmt::format("the request head is over {} bytes", limits_.max_request_bytes));
      else if (input.eof()) input.consume(input.size());  // the client left halfway through a request
      return;
    }
    answer(session, connection, input.view().substr(0, head_bytes));
    input.consume(request_bytes);
    if (!connection.closing && !input.empty() && session.queued() > limits_.max_queued_output) {
      session.pause_input();  // the next requests wait until the client has read the answers
      session.when_drained([&session] { session.resume_input(); });
      return;
    }
  }
}

void StatusHttpHandler::on_timeout(Session& session) {
  Connection& connection = session.state<Connection>();
  if (connection.in_request) return fail(session, connection, 408, "the request took too long");
  connection.closing = true;
  session.close();  // an idle kept-alive connection
}

void StatusHttpHandler::answer(Session& session, Connection& connection, std::string_view head) {
  HttpRequest request;
  std::string detail;
  const int status = parse_http_request(head, request, detail);
  if (status != 0) return fail(session, connection, status, detail);
  const bool head_only = request.method == "HEAD";
  if (request.method != "GET" && !head_only)
    return fail(session, connection, 405, fmt::format("{} is not served here (GET and HEAD are)", request.method));
  if (request.has_body) return fail(session, connection, 413, "this server takes no request body");
  const std::function<std::string()>* page = request.path == "/metrics"       ? &pages_.metrics
                                             : request.path == "/status"      ? &pages_.text
                                             : request.path == "/status.json" ? &pages_.json
                                                                              : nullptr;
  if (!page) {
    connection.closing = true;
    return respond(session, 404, text_type, "404 Not Found: try /metrics, /status or /status.json\n", head_only, true);
  }
  const std::string_view type = page == &pages_.metrics ? metrics_type : page == &pages_.text ? text_type : json_type;
  respond(session, 200, type, (*page)(), head_only, request.close);
  connection.in_request = false;
  if (request.close) {
    connection.closing = true;
    return;
  }
  session.set_timeout(limits_.idle_timeout);
}

void StatusHttpHandler::fail(Session& session, Connection& connection, int status, std::string_view detail) {
  connection.closing = true;
  respond(session, status, text_type, fmt::format("{} {}: {}\n", status, reason_phrase(status), detail), false, true);
}

void StatusHttpHandler::respond(Session& session, int status, std::string_view content_type, const std::string& body,
                                bool head_only, bool close) {
  std::string response = fmt::format(
      "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{}{}\r\n",
      status, reason_phrase(status), http_date(), content_type, body.size(),
      status == 405 ? "Allow: GET, HEAD\r\n" : "", close ? "Connection: close\r\n" : "");
  if (!head_only) response += body;
  session.send(response);
  if (close) session.close();
}

}  // namespace netserver
