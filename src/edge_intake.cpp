#include "edge_intake.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "endpoint.hpp"
#include "metrics_engine.hpp"
#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "proxy_protocol.hpp"

namespace netserver {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

constexpr std::string_view too_many_line = "error: too many connections from your address\r\n";

// Where a PROXY header stands after reading what the socket holds.
enum class Outcome { done, wait, malformed, ended, failed };

// A header as it is read: the bytes taken from the socket so far (all of them header), then the
// result, and on a plaintext listener the client's first bytes read with it.
struct HeaderRead {
  std::string taken;
  ProxyHeader header;
  std::string problem;
  std::string after;  // bytes past the header's end (plaintext only): the session's first input
};

// Parses the header from the bytes taken before and `fresh`.
ProxyHeaderParser::Progress parse_after_taken(HeaderRead& read, std::string_view fresh) {
  if (read.taken.empty()) return parse_proxy_header(fresh, read.header, read.problem);
  std::string joined = read.taken;
  joined.append(fresh);
  return parse_proxy_header(joined, read.header, read.problem);
}

// A recv() that tells the outcome of an error or an end; `wait` when nothing is there yet.
Outcome receive(int fd, char* buffer, std::size_t size, int flags, ssize_t& got, HeaderRead& read) {
  for (;;) {
    got = ::recv(fd, buffer, size, flags);
    if (got > 0) return Outcome::done;
    if (got == 0) return Outcome::ended;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Outcome::wait;
    read.problem = std::strerror(errno);
    return Outcome::failed;
  }
}

// Reads the PROXY header on `fd` as far as it has arrived. With `exact` (a TLS listener: the
// ClientHello must stay in the socket for the handshake) never past its end: the bytes are
// peeked, parsed with those taken before, and only the header's are taken -- one peek and one
// read for the usual header, whole in the first segment. Otherwise one read takes what came and
// the bytes after the header go to `read.after`, the session's first input.
Outcome read_header(int fd, bool exact, HeaderRead& read) {
  for (;;) {
    char buffer[ProxyHeaderParser::default_max_v2_bytes];
    const std::size_t room = sizeof buffer - std::min(read.taken.size(), sizeof buffer - 1);
    ssize_t got = 0;
    const Outcome received = receive(fd, buffer, room, exact ? MSG_PEEK : 0, got, read);
    if (received != Outcome::done) return received;
    const std::string_view fresh(buffer, static_cast<std::size_t>(got));
    const ProxyHeaderParser::Progress progress = parse_after_taken(read, fresh);
    if (progress.status == ProxyHeaderParser::Status::malformed) return Outcome::malformed;
    // need_more: every byte so far is header (no line end yet, fewer than the v2 length); take
    // them and look again. done: the header's rest is `rest` bytes of `fresh`.
    const bool done = progress.status == ProxyHeaderParser::Status::done;
    const std::size_t rest = done ? progress.consumed - read.taken.size() : fresh.size();
    if (!exact) {
      if (done) {
        read.after.assign(fresh.substr(rest));
        return Outcome::done;
      }
      read.taken.append(fresh);
      continue;
    }
    std::size_t took = 0;
    while (took < rest) {  // the peeked bytes are there to read: anything else is a broken socket
      const Outcome taken = receive(fd, buffer + took, rest - took, 0, got, read);
      if (taken != Outcome::done) {
        if (read.problem.empty()) read.problem = "connection ended";
        return Outcome::failed;
      }
      took += static_cast<std::size_t>(got);
    }
    if (done) return Outcome::done;
    read.taken.append(fresh);
  }
}

// The peer's host without its port, for throttled log lines: "127.0.0.1", "[::1]".
std::string_view host_of(const std::string& peer) {
  const std::size_t colon = peer.rfind(':');
  return colon == std::string::npos || peer.starts_with("unix:") ? std::string_view(peer)
                                                                 : std::string_view(peer).substr(0, colon);
}

// Why a client's header was not read, logged once for the connection. A connection closed before
// its first byte is a balancer's TCP health check, not worth a notice.
void report(Outcome outcome, const AcceptedClient& client, const HeaderRead& read) {
  const std::string& listener = client.endpoint->address;
  if (outcome == Outcome::malformed)
    log::notice("closing {} on {}: bad PROXY header: {}", client.peer, listener, read.problem);
  else if (outcome == Outcome::ended && !read.taken.empty())
    log::notice("closing {} on {}: the connection ended inside its PROXY header ({} bytes of it)", client.peer,
                listener, read.taken.size());
  else if (outcome == Outcome::ended)
    log::info("{} on {} closed before sending a PROXY header", client.peer, listener);
  else
    log::info("closing {} on {} while reading its PROXY header: {}", client.peer, listener, read.problem);
}

// A TLS listener's handshake reads the socket itself: the header's bytes, and no more, are taken.
bool exact_header(const AcceptedClient& client) { return !client.endpoint->transport->plaintext(); }

// The client's address from the header takes the balancer's place; the balancer's and the rest of
// what the header said go to `proxy`.
void apply_header(AcceptedClient& client, HeaderRead& read) {
  const ProxyHeader& header = read.header;
  client.early_input = std::move(read.after);
  auto info = std::make_unique<ProxyInfo>();
  info->balancer = client.peer;
  info->version = header.version;
  info->local = !header.has_addresses;
  info->authority = header.authority;
  info->ssl = header.ssl.present && (header.ssl.client & ProxyHeader::client_ssl);
  info->ssl_verified = header.ssl_verified();
  info->ssl_version = header.ssl.version;
  info->ssl_common_name = header.ssl.common_name;
  if (header.has_addresses) {
    info->destination = header.destination_text();
    client.peer = header.source_text();
    std::memcpy(&client.address, &header.source, sizeof client.address);
    client.address_length = header.source_length;
  }
  client.proxy = std::move(info);
}

}  // namespace

// A client whose header has not all arrived: its socket watched (the client keeps owning the
// descriptor: the watch is released, never closed), its deadline, what was read so far.
struct EdgeIntake::Pending {
  Pending(asio::io_context& io, std::uint64_t id, AcceptedClient accepted)
      : id(id), client(std::move(accepted)), watch(io, client.socket.get()), deadline(io) {}
  ~Pending() { unwatch(); }
  void unwatch() {
    deadline.cancel();
    if (watch.is_open()) watch.release();  // cancels the wait; the descriptor stays the client's
  }
  std::uint64_t id;
  AcceptedClient client;
  asio::posix::stream_descriptor watch;
  asio::steady_timer deadline;
  HeaderRead read;
  bool over = false;  // finished, dropped or closed: late handlers do nothing
};

EdgeIntake::EdgeIntake(asio::io_context& io, const EdgeSettings& settings, AddressLimits* limits, Callbacks callbacks)
    : io_(io), settings_(settings), limits_(limits), callbacks_(std::move(callbacks)) {}

EdgeIntake::~EdgeIntake() { close(); }

bool EdgeIntake::needed(const std::vector<Endpoint>& endpoints, const AddressLimits* limits) {
  if (limits) return true;
  for (const Endpoint& endpoint : endpoints)
    if (endpoint.proxy_protocol) return true;
  return false;
}

void EdgeIntake::start(AcceptedClient client) {
  if (client.edge_checked || !client.endpoint->proxy_protocol) return limit(std::move(client));
  if (!settings_.trusts(reinterpret_cast<const sockaddr*>(&client.address), client.address_length))
    return untrusted(client);
  HeaderRead read;
  const Outcome outcome = read_header(client.socket.get(), exact_header(client), read);
  if (outcome == Outcome::done) {
    apply_header(client, read);
    return limit(std::move(client));
  }
  if (outcome == Outcome::wait) {
    const std::uint64_t id = ++next_id_;
    auto pending = std::make_shared<Pending>(io_, id, std::move(client));
    pending->read = std::move(read);
    pending_.emplace(id, pending);
    pending->deadline.expires_after(settings_.proxy_timeout);
    pending->deadline.async_wait([this, pending](const error_code& error) {
      if (!error && !pending->over) on_late(pending);
    });
    return wait(pending);
  }
  report(outcome, client, read);
  count_refusal(client.endpoint->metrics_index, RefusalReason::proxy);
  client.socket.reset();
  if (callbacks_.dropped) callbacks_.dropped();
}

// Only a balancer may say who the client is: anyone else sending a header could pose as any address.
void EdgeIntake::untrusted(AcceptedClient& client) {
  std::uint64_t suppressed = 0;
  if (untrusted_log_.allow(host_of(client.peer), std::chrono::steady_clock::now(), &suppressed))
    log::warning("refused {} on {}: not in proxy_trusted, so it may not send a PROXY header{}", client.peer,
                 client.endpoint->address,
                 suppressed ? fmt::format(" ({} more refused since the last line)", suppressed) : std::string());
  count_refusal(client.endpoint->metrics_index, RefusalReason::proxy);
  client.socket.reset();
  if (callbacks_.dropped) callbacks_.dropped();
}

void EdgeIntake::wait(const std::shared_ptr<Pending>& pending) {
  pending->watch.async_wait(asio::posix::descriptor_base::wait_read, [this, pending](const error_code& error) {
    if (!error && !pending->over) on_readable(pending);
  });
}

void EdgeIntake::on_readable(const std::shared_ptr<Pending>& pending) {
  const Outcome outcome = read_header(pending->client.socket.get(), exact_header(pending->client), pending->read);
  if (outcome == Outcome::wait) return wait(pending);
  AcceptedClient& client = pending->client;
  if (outcome == Outcome::done) {
    AcceptedClient done = std::move(client);
    forget(*pending);
    apply_header(done, pending->read);
    return limit(std::move(done));
  }
  report(outcome, client, pending->read);
  count_refusal(client.endpoint->metrics_index, RefusalReason::proxy);
  forget(*pending);
  if (callbacks_.dropped) callbacks_.dropped();
}

// A header must be complete within proxy_timeout of the accept, however it trickles in.
void EdgeIntake::on_late(const std::shared_ptr<Pending>& pending) {
  log::notice("closing {} on {}: no complete PROXY header within {} s ({} bytes of it came)", pending->client.peer,
              pending->client.endpoint->address, to_seconds(settings_.proxy_timeout), pending->read.taken.size());
  count_refusal(pending->client.endpoint->metrics_index, RefusalReason::proxy);
  forget(*pending);
  if (callbacks_.dropped) callbacks_.dropped();
}

// Ends the wait for `pending`; a client still in it is closed.
void EdgeIntake::forget(Pending& pending) {
  pending.over = true;
  pending.unwatch();
  pending.client.socket.reset();
  pending_.erase(pending.id);  // last: this may destroy `pending`
}

void EdgeIntake::limit(AcceptedClient client) {
  if (limits_) {
    const auto key = AddressKey::of(reinterpret_cast<const sockaddr*>(&client.address), client.address_length,
                                    settings_.ipv6_prefix);
    if (key) {
      const AddressLimits::Admission admission = limits_->try_acquire(*key);
      if (admission.refused()) {
        const bool count = admission.verdict == AddressLimits::Verdict::too_many_connections;
        count_refusal(client.endpoint->metrics_index, count ? RefusalReason::per_ip : RefusalReason::rate);
        if (admission.log)
          log::notice("refused {} on {}: {} ({}){}", client.peer, client.endpoint->address,
                      count ? "too many connections from its address" : "new connections from its address too fast",
                      count ? fmt::format("{} open, max_connections_per_ip {}", admission.open,
                                          limits_->settings().max_connections)
                            : fmt::format("connection_rate_per_ip {}", limits_->settings().rate),
                      admission.refused_unlogged
                          ? fmt::format("; {} more refused since the last line", admission.refused_unlogged)
                          : std::string());
        if (client.endpoint->transport->plaintext()) {
          [[maybe_unused]] const ssize_t ignored = ::send(client.socket.get(), too_many_line.data(),
                                                          too_many_line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        client.socket.reset();
        if (callbacks_.dropped) callbacks_.dropped();
        return;
      }
      client.address_hold = AddressHold(*limits_, admission);
    }
  }
  client.edge_checked = true;
  callbacks_.admitted(std::move(client));
}

std::vector<int> EdgeIntake::descriptors() const {
  std::vector<int> fds;
  for (const auto& [id, entry] : pending_) fds.push_back(entry->client.socket.get());
  return fds;
}

void EdgeIntake::close() {
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, entry] : pending) {
    entry->over = true;
    entry->unwatch();
    entry->client.socket.reset();
  }
}

}  // namespace netserver
