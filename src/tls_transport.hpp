#pragma once
/// TlsTransport: a session's byte stream over TLS, with OpenSSL driven directly on the accepted,
/// non-blocking socket (SSL_set_fd) and Asio used only to wait for readiness. No buffer of its own
/// sits between the session and OpenSSL: reads land in the session's buffers, writes go from the
/// session's queue, and OpenSSL's record buffers are released whenever they are empty
/// (SSL_MODE_RELEASE_BUFFERS), so an idle connection keeps only the SSL object and its keys.

#include <openssl/ssl.h>

#include <memory>

#include <boost/asio/steady_timer.hpp>

#include "netserver/tls.hpp"
#include "transport.hpp"

namespace netserver {

class TlsTransport final : public Transport {
 public:
  /// Takes the accepted socket; `context` is the process's shared context (it outlives every
  /// session). The handshake runs in start() and is cut after `handshake_timeout` seconds.
  TlsTransport(Socket socket, SSL_CTX* context, double handshake_timeout);
  ~TlsTransport() override;

  /// The server handshake, with its deadline; `ready` gets timed_out when the deadline cut it.
  void start(Ready ready) override;
  /// Reads at least one byte: what OpenSSL already holds, else after the socket is readable.
  void async_read_some(std::span<char> into, ReadDone done) override;
  /// One SSL_read without waiting; a close_notify or a bare EOF sets `eof`.
  std::size_t read_now(std::span<char> into, bool& eof) override;
  /// One SSL_write of at most one record (partial writes): 0 when the socket is full. A record
  /// cut short by a full socket stays in OpenSSL until the same bytes are offered again, which the
  /// session does since it keeps them queued.
  std::size_t write_now(std::string_view bytes, boost::system::error_code& error) override;
  /// Waits until the last write_now's retry can go on (before the handshake ends: for its end).
  void async_wait_writable(Ready ready) override;
  void async_wait_reset(Ready reset, boost::asio::cancellation_slot cancel) override {
    wait_for_reset(socket_, shared_from_this(), std::move(reset), cancel);
  }
  /// close_notify, then the client's (its remaining data is read and dropped), bounded by
  /// `linger`; before the handshake ended, a TCP half-close and a drain as for plaintext.
  bool shutdown(Duration linger, bool peer_closed, std::function<void()> done) override;
  /// Closes the socket and frees the SSL object (its keys and buffers) at once.
  void close() override;
  /// False once closed.
  bool is_open() const override;
  /// What the handshake negotiated; null until it completed.
  const TlsInfo* tls() const override;

  TlsTransport(const TlsTransport&) = delete;
  TlsTransport& operator=(const TlsTransport&) = delete;

 private:
  using wait_type = boost::asio::socket_base::wait_type;
  using Step = void (TlsTransport::*)(const boost::system::error_code&);

  void handshake_step(const boost::system::error_code& waited);
  void read_step(const boost::system::error_code& waited);
  void end_read(const boost::system::error_code& error, std::size_t bytes);
  void close_notify_step(const boost::system::error_code& waited);
  void linger_step(const boost::system::error_code& waited);
  void drain();
  void end_linger();
  int outcome(int result) const;
  boost::system::error_code failure(int code, int saved_errno) const;
  void wait(wait_type type, Step next);
  void close_socket();
  void wake_writer(const boost::system::error_code& error);
  void describe();

  Socket socket_;
  SSL* ssl_;                           // null once closed
  boost::asio::steady_timer timer_;    // the handshake deadline, later the linger deadline
  double handshake_timeout_;
  bool handshake_done_ = false;
  bool timed_out_ = false;
  bool lingering_ = false;             // shutdown() began: the timer is the linger deadline
  bool first_attempt_ = false;         // inside async_read_some: a completion is posted
  bool write_wants_read_ = false;      // the last write stopped for input (a TLS 1.2 renegotiation)
  boost::system::error_code read_error_;   // found by read_now, reported by the next read
  boost::system::error_code write_error_;  // sticky: the stream cannot carry more output
  Ready ready_;                        // the end of the handshake
  Ready writer_;                       // the session waiting for the handshake to write
  std::span<char> reading_;            // the read in flight
  ReadDone read_done_;
  std::function<void()> done_;         // the end of a graceful shutdown
  TlsInfo info_;
};

}  // namespace netserver
