#include "engine.hpp"

#include <netinet/in.h>
#include <sys/socket.h>

#include <boost/asio/post.hpp>

#include "netserver/handler.hpp"
#include "netserver/log.hpp"
#include "netserver/server.hpp"
#include "netserver/tls.hpp"
#include "observatory.hpp"
#include "server_runtime.hpp"

namespace netserver {

namespace asio = boost::asio;
using boost::system::error_code;

// --- the session table -------------------------------------------------------------------------

void SessionTable::add(std::shared_ptr<SessionImpl> session) {
  session->table_index = sessions_.size();
  sessions_.push_back(std::move(session));
}

void SessionTable::remove(SessionImpl& session) {
  const std::size_t index = session.table_index;
  if (index >= sessions_.size() || sessions_[index].get() != &session) return;
  sessions_[index] = std::move(sessions_.back());
  static_cast<SessionImpl&>(*sessions_[index]).table_index = index;
  sessions_.pop_back();
}

std::vector<std::shared_ptr<SessionImpl>> SessionTable::snapshot() const {
  std::vector<std::shared_ptr<SessionImpl>> copy;
  copy.reserve(sessions_.size());
  for (const auto& session : sessions_) copy.push_back(std::static_pointer_cast<SessionImpl>(session));
  return copy;
}

// --- the engine --------------------------------------------------------------------------------

Engine::Engine(Server& server, asio::io_context& io, EngineOptions options)
    : server_(server),
      io_(io),
      options_(std::move(options)),
      limits_(options_.limits ? *options_.limits : server.session_limits()),
      rooms_(io, server.runtime().bus()),
      grace_timer_(io),
      scratch_(64 * 1024) {
  ServerRuntime& runtime = server.runtime();
  if (!options_.toolkit) watch(runtime);
  if (!options_.toolkit && EdgeIntake::needed(runtime.endpoints(), runtime.address_limits()))
    intake_ = std::make_unique<EdgeIntake>(io, runtime.edge(), runtime.address_limits(),
                                           EdgeIntake::Callbacks{
                                               .admitted = [this](AcceptedClient client) {
                                                 admit(std::move(client));
                                                 edge_done();
                                               },
                                               .dropped = [this] {
                                                 if (on_session_end_) on_session_end_();
                                                 edge_done();
                                               },
                                           });
}

Engine::~Engine() {
  if (watching_) StallWatcher::stop();
}

// The stall watcher (stall_warning) and the heartbeat the parent's watchdog reads
// (worker_timeout), for an engine serving the user's protocol once the metrics table exists.
// A process serving one client at a time (a PreFork or Fork child, Single) has no other client
// that a slow callback keeps waiting, so it is not warned about; its watcher thread would cost
// more than it tells -- its wake-ups, and every shared_ptr counted atomically once a process has
// a thread (PreFork echo: 10% more server CPU per request with it). It still runs there for the
// watchdog's report when worker_timeout is set.
void Engine::watch(ServerRuntime& runtime) {
  if (!MetricsStore::current()) return;
  const ObservabilitySettings& settings = runtime.observatory().settings();
  const auto warn = options_.max_sessions > 1 ? std::chrono::duration_cast<std::chrono::nanoseconds>(settings.stall_warning)
                                              : std::chrono::nanoseconds::zero();
  const auto timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(settings.worker_timeout);
  if (warn > std::chrono::nanoseconds::zero() || timeout > std::chrono::nanoseconds::zero()) {
    StallWatcher::start(StallWatchSettings{.warn_after = warn,
                                           .report_after = timeout / 2,
                                           .process = runtime.observatory().process_name(),
                                           .stalls = engine_metrics().loop_stalls});
    watching_ = true;
  }
  if (timeout > std::chrono::nanoseconds::zero()) {
    // A supervised process the watchdog may abort says what it was doing, with its stack.
    if (runtime.observatory().supervised()) install_last_words(runtime.observatory().process_name());
    const auto beat = std::max(std::chrono::milliseconds(10),
                               std::chrono::duration_cast<std::chrono::milliseconds>(timeout / 8));
    heartbeat_ = std::make_unique<HeartbeatTimer>(io_, beat);
  }
}

void Engine::listen(const std::vector<Endpoint>& endpoints) {
  acceptor_ = std::make_unique<Acceptor>(io_, endpoints, options_.watch,
                                         Acceptor::Callbacks{
                                             .appetite = [this] { return appetite(); },
                                             .take = [this](AcceptedClient client) { serve(std::move(client)); },
                                             .activity = [this] { ++inputs_; },
                                             .batch = options_.max_sessions == 1 ? 1u : 512u,
                                         });
  acceptor_->resume();
}

// Whether to take another client now: never while stopping or held for a restart; at
// max_sessions only to refuse it (refuse_when_full); and a Multiplex worker among several takes
// no more than its share (checked per connection, so a batch does not undo the balance).
Appetite Engine::appetite() {
  if (stopping_ || accept_held_) return Appetite::none;
  if (!options_.refuse_when_full && taken() >= options_.max_sessions) return Appetite::none;
  if (options_.may_accept && !options_.may_accept(table_.size())) return Appetite::shortly;
  return Appetite::take;
}

void Engine::hold_accepting() {
  accept_held_ = true;
  if (acceptor_) acceptor_->hold();
}

void Engine::resume_accepting() {
  accept_held_ = false;
  if (acceptor_ && !stopping_) acceptor_->resume();
}

void Engine::close_listeners() {
  if (acceptor_) acceptor_->close();
  if (intake_) intake_->close();  // clients still sending their PROXY header were never served
}

void Engine::serve(AcceptedClient client) {
  if (stopping_) return;
  if (on_client_) on_client_();
  if (taken() >= options_.max_sessions) {
    if (!options_.toolkit)
      count_refusal(client.endpoint->metrics_index,
                    options_.refuse_when_full ? RefusalReason::max_connections : RefusalReason::busy);
    return refuse_busy(client);
  }
  if (intake_ && !client.edge_checked) return intake_->start(std::move(client));
  admit(std::move(client));
}

// A client left the edge (served or refused): the slot it took while there may be free again (a
// process serving one client at a time held its acceptor meanwhile).
void Engine::edge_done() {
  if (acceptor_ && !accept_held_ && !stopping_ && taken() < options_.max_sessions) acceptor_->resume();
}

// The accept hooks and access rules see the session before it starts; a refused client gets what
// request_denied_hook queued (if its socket takes it at once) and the handler never hears of it.
void Engine::admit(AcceptedClient client) {
  const Endpoint& endpoint = *client.endpoint;
  const int protocol = client.family == AF_UNIX ? 0 : IPPROTO_TCP;
  Transport::Socket socket(io_, asio::generic::stream_protocol(client.family, protocol), client.socket.release());
  auto session = std::make_shared<SessionImpl>(*this, endpoint, endpoint.transport->make(std::move(socket)), ++next_id_,
                                               std::move(client.peer));
  session->address_hold = std::move(client.address_hold);
  session->set_early_input(std::move(client.early_input));
  if (client.proxy) {
    log::info("connection from {} via {} (session {})", session->peer(), client.proxy->balancer, session->id());
    session->set_proxy(std::move(client.proxy));
  } else {
    log::info("connection from {} (session {})", session->peer(), session->id());
  }
  if (!admitted(*session)) {
    count_refusal(endpoint.metrics_index, RefusalReason::access);
    session->address_hold.release();
    session->refuse();
    if (on_session_end_) on_session_end_();
    return;
  }
  table_.add(session);
  if (!options_.toolkit) engine_metrics().sessions_open.add(1);
  if (options_.sessions_changed) options_.sessions_changed(table_.size());
  session->start();
}

bool Engine::admitted(SessionImpl& session) {
  if (options_.toolkit) return true;  // the status listener checks its peers itself
  try {
    server_.post_accept_hook(session);
    if (server_.allow_deny(session) && server_.allow_deny_hook(session)) return true;
    log::notice("refused {} (session {}): access denied", session.peer(), session.id());
    server_.request_denied_hook(session);
    server_.post_process_request_hook(session);
  } catch (const std::exception& error) {
    log::error("accept hook failed for {}: {}", session.peer(), error.what());
  }
  return false;
}

// A TLS client is closed without a word: a plaintext line would only garble its handshake.
void Engine::refuse_busy(AcceptedClient& client) {
  log::info("refusing {}: server busy ({} sessions open)", client.peer, table_.size());
  if (!client.endpoint->transport->plaintext()) return;
  static constexpr std::string_view line = "error: server busy\r\n";
  [[maybe_unused]] const ssize_t ignored =
      ::send(client.socket.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
}

void Engine::session_ended(SessionImpl& session) {
  session.address_hold.release();  // before the log line: whoever reads "closed" may connect again
  if (!options_.toolkit) {
    engine_metrics().sessions_open.add(-1);
    engine_metrics().closed_by(close_reason_of(session.end_reason())).add();
    try {
      server_.post_process_request_hook(session);
    } catch (const std::exception& error) {
      log::error("post_process_request_hook failed for {}: {}", session.peer(), error.what());
    }
  }
  const auto seconds = std::chrono::duration<double>(SessionImpl::Clock::now() - session.started()).count();
  const TlsInfo* tls = session.tls();
  log::info("closed {} (session {}): {}; {:.3f} s, {} bytes in, {} bytes out{}{}; {} writes", session.peer(),
            session.id(), session.end_reason(), seconds, session.bytes_in(), session.bytes_out(), tls ? "; " : "",
            tls ? tls->version : "", session.writes());
  rooms_.forget(session);
  table_.remove(session);
  if (options_.sessions_changed) options_.sessions_changed(table_.size());
  if (on_session_end_) on_session_end_();
  if (stopping_) return check_stopped();
  if (acceptor_ && !accept_held_) acceptor_->resume();  // a slot is free
}

void Engine::schedule_flush(std::shared_ptr<SessionImpl> session) {
  to_flush_.push_back(std::move(session));
  if (flush_posted_) return;
  flush_posted_ = true;
  flush_deferrals_ = 0;
  inputs_at_post_ = inputs_;
  asio::post(io_, [this] { flush_scheduled(); });
}

// Output for other sessions is written "before sleep" (like Redis): while input keeps arriving,
// the flush waits a few turns of the loop so that one write carries many messages; it never waits
// more than max_flush_deferrals turns.
void Engine::flush_scheduled() {
  if (inputs_ != inputs_at_post_ && flush_deferrals_ < max_flush_deferrals) {
    ++flush_deferrals_;
    inputs_at_post_ = inputs_;
    asio::post(io_, [this] { flush_scheduled(); });
    return;
  }
  flush_posted_ = false;
  std::vector<std::shared_ptr<SessionImpl>> batch;
  batch.swap(to_flush_);
  for (auto& session : batch) session->flush();
  batch.clear();
  if (to_flush_.empty()) to_flush_.swap(batch);  // keep the capacity for the next batch
}

// --- stopping ------------------------------------------------------------------------------------

void Engine::stop(StopMode mode, Duration grace, std::function<void()> stopped) {
  stopping_ = true;
  stopped_ = std::move(stopped);
  close_listeners();
  for (auto& session : table_.snapshot()) {
    if (mode == StopMode::abort) session->cut("server stopped");
    else if (mode == StopMode::close) session->close();
  }
  if (mode != StopMode::abort && has_clients()) cut_after(grace);
  check_stopped();
}

// Sessions still open `grace` from now are cut; an earlier deadline already set stays.
void Engine::cut_after(Duration grace) {
  if (grace == forever) return;
  const auto deadline = SessionImpl::Clock::now() + grace;
  if (grace_armed_ && grace_timer_.expiry() <= deadline) return;
  grace_armed_ = true;
  grace_timer_.expires_at(deadline);
  grace_timer_.async_wait([this, grace](const error_code& error) {
    if (error || !has_clients()) return;
    log::warning("graceful timeout: cutting {} session(s) still open after {} s", table_.size(), to_seconds(grace));
    for (auto& session : table_.snapshot()) session->cut("graceful timeout");
  });
}

void Engine::linger_ended() {
  --lingering_;
  if (stopping_) check_stopped();
}

// Stopped once no session is open and no closed socket lingers (a close before the client's EOF
// could turn into a reset that destroys the last reply in flight).
void Engine::check_stopped() {
  if (!stopping_ || has_clients() || lingering_ > 0 || !stopped_) return;
  grace_timer_.cancel();
  auto stopped = std::move(stopped_);
  stopped_ = nullptr;
  stopped();
}

}  // namespace netserver
