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
// result.
struct HeaderRead {
  std::string taken;
  ProxyHeader header;
  std::string problem;
};

// Reads the PROXY header on `fd` as far as it has arrived, never past its end: the bytes are
// peeked, parsed with those taken before, and only the header's are taken. The usual header
// arrives whole in the first segment: one peek and one read.
Outcome read_header(int fd, HeaderRead& read) {
  for (;;) {
    char buffer[ProxyHeaderParser::default_max_v2_bytes];
    const std::size_t room = sizeof buffer - std::min(read.taken.size(), sizeof buffer - 1);
    const ssize_t peeked = ::recv(fd, buffer, room, MSG_PEEK);
    if (peeked < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return Outcome::wait;
      read.problem = std::strerror(errno);
      return Outcome::failed;
    }
    if (peeked == 0) return Outcome::ended;
    const std::string_view fresh(buffer, static_cast<std::size_t>(peeked));
    std::string joined;
    std::string_view bytes = fresh;
    if (!read.taken.empty()) {
      joined = read.taken;
      joined.append(fresh);
      bytes = joined;
    }
    const ProxyHeaderParser::Progress progress = parse_proxy_header(bytes, read.header, read.problem);
    if (progress.status == ProxyHeaderParser::Status::malformed) return Outcome::malformed;
    // need_more: every byte so far is header (no line end yet, fewer than the v2 length); take
    // them and look again. done: take exactly the header's rest.
    const std::size_t take =
        progress.status == ProxyHeaderParser::Status::done ? progress.consumed - read.taken.size() : fresh.size();
    std::size_t got = 0;
    while (got < take) {
      const ssize_t n = ::recv(fd, buffer + got, take - got, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {  // peeked bytes are there to read: anything else is a broken socket
        read.problem = n < 0 ? std::strerror(errno) : "connection ended";
        return Outcome::failed;
      }
      got += static_cast<std::size_t>(n);
    }
    if (progress.status == ProxyHeaderParser::Status::done) return Outcome::done;
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

// The client's address from the header takes the balancer's place; the balancer's and the rest of
// what the header said go to `proxy`.
void apply_header(AcceptedClient& client, const ProxyHeader& header) {
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
  const Outcome outcome = read_header(client.socket.get(), read);
  if (outcome == Outcome::done) {
    apply_header(client, read.header);
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
  const Outcome outcome = read_header(pending->client.socket.get(), pending->read);
  if (outcome == Outcome::wait) return wait(pending);
  AcceptedClient& client = pending->client;
  if (outcome == Outcome::done) {
    AcceptedClient done = std::move(client);
    forget(*pending);
    apply_header(done, pending->read.header);
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
