#include "tls_transport.hpp"

#include <openssl/err.h>
#include <openssl/x509.h>

#include <cerrno>
#include <chrono>
#include <new>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>

#include "tls.hpp"

namespace netserver {

namespace asio = boost::asio;
using boost::system::error_code;

namespace {

// Input a lingering session drops in one turn of the loop before letting others run.
constexpr int linger_reads_per_turn = 16;

asio::steady_timer::duration to_duration(double seconds) {
  return std::chrono::duration_cast<asio::steady_timer::duration>(std::chrono::duration<double>(seconds));
}

std::string subject_of(X509* certificate) {
  BIO* bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, X509_get_subject_name(certificate), 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string text(data, size > 0 ? static_cast<std::size_t>(size) : 0);
  BIO_free(bio);
  return text;
}

}  // namespace

TlsTransport::TlsTransport(Socket socket, SSL_CTX* context, double handshake_timeout)
    : socket_(std::move(socket)), ssl_(SSL_new(context)), timer_(socket_.get_executor()), handshake_timeout_(handshake_timeout) {
  // The modes (partial writes, moving write buffer, released buffers) and read-ahead come from
  // the context. The socket BIO does not own the descriptor: socket_ closes it. It writes with
  // write(2), not send(MSG_NOSIGNAL): a vanished client's SIGPIPE is ignored by Server::post_bind,
  // which every process runs before it serves.
  if (!ssl_ || SSL_set_fd(ssl_, socket_.native_handle()) != 1) {
    ERR_clear_error();
    if (ssl_) SSL_free(ssl_);
    throw std::bad_alloc();
  }
  SSL_set_accept_state(ssl_);
}

TlsTransport::~TlsTransport() {
  if (ssl_) SSL_free(ssl_);
}

// --- handshake ---------------------------------------------------------------------------------

void TlsTransport::start(Ready ready) {
  ready_ = std::move(ready);
  error_code error;
  socket_.native_non_blocking(true, error);  // OpenSSL reads and writes the descriptor itself
  timer_.expires_after(to_duration(handshake_timeout_));
  timer_.async_wait([self = shared_from_this(), this](const error_code& error) {
    if (error || handshake_done_ || lingering_) return;
    timed_out_ = true;  // a client that never finishes its handshake holds nothing longer
    close_socket();     // the handshake's wait ends, and handshake_step reports the timeout
  });
  handshake_step(error);
}

void TlsTransport::handshake_step(const error_code& waited) {
  error_code error = waited;
  if (!error) {
    ERR_clear_error();
    const int result = SSL_do_handshake(ssl_);
    const int code = outcome(result);
    const int saved_errno = errno;
    if (code == SSL_ERROR_WANT_READ) return wait(wait_type::wait_read, &TlsTransport::handshake_step);
    if (code == SSL_ERROR_WANT_WRITE) return wait(wait_type::wait_write, &TlsTransport::handshake_step);
    if (code != SSL_ERROR_NONE) error = failure(code, saved_errno);
  }
  if (timed_out_) error = asio::error::timed_out;
  if (!lingering_) timer_.cancel();  // else the timer is the linger deadline now
  if (!error) {
    handshake_done_ = true;
    describe();
  }
  if (Ready ready = std::exchange(ready_, nullptr)) ready(error);
  wake_writer(error);
}

// --- reading -----------------------------------------------------------------------------------

// The first attempt runs at once (OpenSSL may hold decrypted or read-ahead input that no socket
// readiness would announce); its completion is posted, never run inside this call.
void TlsTransport::async_read_some(std::span<char> into, ReadDone done) {
  reading_ = into;
  read_done_ = std::move(done);
  first_attempt_ = true;
  read_step(!ssl_ ? error_code(asio::error::operation_aborted) : read_error_);
  first_attempt_ = false;
}

void TlsTransport::read_step(const error_code& waited) {
  if (waited) return end_read(waited, 0);
  std::size_t bytes = 0;
  ERR_clear_error();
  const int code = outcome(SSL_read_ex(ssl_, reading_.data(), reading_.size(), &bytes));
  const int saved_errno = errno;
  if (code == SSL_ERROR_WANT_READ) return wait(wait_type::wait_read, &TlsTransport::read_step);
  if (code == SSL_ERROR_WANT_WRITE) return wait(wait_type::wait_write, &TlsTransport::read_step);  // a KeyUpdate reply
  end_read(code == SSL_ERROR_NONE ? error_code() : failure(code, saved_errno), bytes);
}

void TlsTransport::end_read(const error_code& error, std::size_t bytes) {
  ReadDone done = std::exchange(read_done_, nullptr);
  if (!done) return;
  if (!first_attempt_) return done(error, bytes);
  asio::post(socket_.get_executor(), [done = std::move(done), error, bytes] { done(error, bytes); });
}

std::size_t TlsTransport::read_now(std::span<char> into, bool& eof) {
  if (!ssl_ || read_error_) return 0;
  std::size_t bytes = 0;
  ERR_clear_error();
  const int code = outcome(SSL_read_ex(ssl_, into.data(), into.size(), &bytes));
  const int saved_errno = errno;
  if (code == SSL_ERROR_NONE) return bytes;
  if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) return 0;  // the next read waits for it
  const error_code error = failure(code, saved_errno);
  if (error == asio::error::eof) eof = true;
  else read_error_ = error;  // the next read reports it
  return 0;
}

// --- writing -----------------------------------------------------------------------------------

std::size_t TlsTransport::write_now(std::string_view bytes, error_code& error) {
  if (write_error_) {
    error = write_error_;
    return 0;
  }
  if (!handshake_done_ || !ssl_ || lingering_ || bytes.empty()) return 0;
  std::size_t written = 0;
  ERR_clear_error();
  const int code = outcome(SSL_write_ex(ssl_, bytes.data(), bytes.size(), &written));
  const int saved_errno = errno;
  write_wants_read_ = code == SSL_ERROR_WANT_READ;
  if (code == SSL_ERROR_NONE) return written;
  if (code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE) return 0;
  error = write_error_ = failure(code, saved_errno);
  return 0;
}

void TlsTransport::async_wait_writable(Ready ready) {
  if (!ssl_ || !socket_.is_open()) {
    asio::post(socket_.get_executor(), [ready = std::move(ready)] { ready(asio::error::operation_aborted); });
    return;
  }
  if (!handshake_done_) {
    writer_ = std::move(ready);  // woken when the handshake ends
    return;
  }
  socket_.async_wait(write_wants_read_ ? wait_type::wait_read : wait_type::wait_write,
                     [self = shared_from_this(), ready = std::move(ready)](const error_code& error) { ready(error); });
}

// --- the end -----------------------------------------------------------------------------------

bool TlsTransport::shutdown(Duration linger, bool peer_closed, std::function<void()> done) {
  if (!ssl_ || !socket_.is_open()) return false;
  if (handshake_done_ && peer_closed) {
    // The client sends nothing more: our close_notify as far as the socket takes it, then close.
    // Every byte of output went to the socket already, and no unread input turns close into a reset.
    ERR_clear_error();
    SSL_shutdown(ssl_);
    ERR_clear_error();
    close();
    return false;
  }
  lingering_ = true;
  done_ = std::move(done);
  timer_.expires_after(linger);
  timer_.async_wait([self = shared_from_this(), this](const error_code& error) {
    if (!error) end_linger();  // the client did not finish in time
  });
  error_code ignored;
  socket_.cancel(ignored);  // the session's read or the handshake still waiting end here; lingering reads on
  if (!handshake_done_) {
    // No TLS yet: a plain half-close, as for a plaintext client.
    socket_.shutdown(asio::socket_base::shutdown_send, ignored);
    drain();
  } else {
    close_notify_step(error_code());
  }
  return true;
}

void TlsTransport::close_notify_step(const error_code& waited) {
  if (waited) return end_linger();
  ERR_clear_error();
  const int result = SSL_shutdown(ssl_);
  if (result == 1) return end_linger();  // the client's close_notify came already
  if (result == 0) return linger_step(error_code());
  const int code = SSL_get_error(ssl_, result);
  ERR_clear_error();
  if (code == SSL_ERROR_WANT_WRITE) return wait(wait_type::wait_write, &TlsTransport::close_notify_step);
  if (code == SSL_ERROR_WANT_READ) return wait(wait_type::wait_read, &TlsTransport::close_notify_step);
  end_linger();  // the stream failed earlier: nothing to say goodbye on
}

// Reads and drops the client's input until its close_notify, its EOF or an error. Input that keeps
// coming is read in turns, so that one client cannot hold the loop until the linger deadline.
void TlsTransport::linger_step(const error_code& waited) {
  if (waited) return end_linger();
  for (int turn = 0; turn < linger_reads_per_turn; ++turn) {
    std::size_t bytes = 0;
    ERR_clear_error();
    const std::span<char> sink = discard_buffer();
    const int code = outcome(SSL_read_ex(ssl_, sink.data(), sink.size(), &bytes));
    if (code == SSL_ERROR_NONE) continue;
    ERR_clear_error();
    if (code == SSL_ERROR_WANT_READ) return wait(wait_type::wait_read, &TlsTransport::linger_step);
    if (code == SSL_ERROR_WANT_WRITE) return wait(wait_type::wait_write, &TlsTransport::linger_step);
    return end_linger();
  }
  asio::post(socket_.get_executor(), [self = shared_from_this(), this] { linger_step(ssl_ ? error_code() : asio::error::operation_aborted); });
}

void TlsTransport::drain() {
  const std::span<char> sink = discard_buffer();
  socket_.async_read_some(asio::buffer(sink.data(), sink.size()), [self = shared_from_this(), this](const error_code& error, std::size_t) {
    if (!error) return drain();
    end_linger();
  });
}

void TlsTransport::end_linger() {
  close();
  if (auto done = std::exchange(done_, nullptr)) done();
}

void TlsTransport::close() {
  close_socket();
  timer_.cancel();
  if (ssl_) {
    SSL_free(ssl_);  // its keys and buffers go now, not when the session is retired
    ssl_ = nullptr;
  }
  wake_writer(asio::error::operation_aborted);
}

bool TlsTransport::is_open() const { return ssl_ && socket_.is_open(); }

const TlsInfo* TlsTransport::tls() const { return handshake_done_ ? &info_ : nullptr; }

// --- helpers -----------------------------------------------------------------------------------

// SSL_ERROR_NONE for a call that succeeded, else what it needs or why it failed.
int TlsTransport::outcome(int result) const { return result > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl_, result); }

// The failure an OpenSSL call reported, as an error code: the end of the client's stream (with
// or without close_notify) is eof; a failed system call is its errno; a TLS error is OpenSSL's
// reason ("wrong version number"). The error queue is left empty for the next session.
error_code TlsTransport::failure(int code, int saved_errno) const {
  error_code error = asio::error::eof;
  if (code == SSL_ERROR_SYSCALL && saved_errno != 0) {
    error = error_code(saved_errno, boost::system::system_category());
  } else if (code == SSL_ERROR_SSL) {
    const unsigned long last = ERR_peek_last_error();
    if (ERR_GET_LIB(last) != ERR_LIB_SSL || ERR_GET_REASON(last) != SSL_R_UNEXPECTED_EOF_WHILE_READING)
      error = error_code(static_cast<int>(last), asio::error::get_ssl_category());
  }
  ERR_clear_error();
  return error;
}

// Waits for the socket, then goes on with `next`; a wait that ends after close() reports
// operation_aborted, so that no step touches a freed SSL object.
void TlsTransport::wait(wait_type type, Step next) {
  socket_.async_wait(type, [self = shared_from_this(), this, next](const error_code& error) {
    (this->*next)(ssl_ ? error : error_code(asio::error::operation_aborted));
  });
}

void TlsTransport::close_socket() {
  error_code ignored;
  if (socket_.is_open()) socket_.close(ignored);
}

void TlsTransport::wake_writer(const error_code& error) {
  if (Ready writer = std::exchange(writer_, nullptr)) writer(error);
}

void TlsTransport::describe() {
  info_.version = SSL_get_version(ssl_);
  info_.cipher = SSL_get_cipher_name(ssl_);
  // A TLS 1.2 resumption names the session's (accepted) name; a name that is no host name never reaches the handler.
  if (const char* name = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name); name && is_host_name(name)) info_.server_name = name;
  const unsigned char* alpn = nullptr;
  unsigned length = 0;
  SSL_get0_alpn_selected(ssl_, &alpn, &length);
  if (alpn) info_.alpn.assign(reinterpret_cast<const char*>(alpn), length);
  if (X509* peer = SSL_get0_peer_certificate(ssl_)) {
    info_.peer_subject = subject_of(peer);
    info_.peer_verified = SSL_get_verify_result(ssl_) == X509_V_OK;
  }
  info_.resumed = SSL_session_reused(ssl_) == 1;
}

}  // namespace netserver
