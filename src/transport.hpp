#pragma once
/// Transport: a session's byte stream, below the Session's bounds. The Session decides what to
/// read and write and when (max_line, max_output, backpressure, the "before sleep" flush, one
/// write in flight); a Transport only moves bytes: a plain socket here, a TLS stream in tls.hpp.
/// Not thread-safe: every call happens on the process's event loop.

#include <cstddef>
#include <functional>
#include <memory>
#include <span>
#include <string_view>

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/system/error_code.hpp>

#include "netserver/options.hpp"

namespace netserver {

struct TlsInfo;

class Transport : public std::enable_shared_from_this<Transport> {
 public:
  using Socket = boost::asio::generic::stream_protocol::socket;
  /// Outcome of a wait: success, operation_aborted after close(), or the failure.
  using Ready = std::function<void(const boost::system::error_code&)>;
  /// Outcome of a read: bytes read, or asio::error::eof when the client finished sending.
  using ReadDone = std::function<void(const boost::system::error_code&, std::size_t)>;

  virtual ~Transport() = default;

  /// Makes the stream ready for bytes (TLS: the server handshake, cut at its deadline). `ready`
  /// runs once, with the failure if there was one; a plain socket calls it before returning.
  virtual void start(Ready ready) = 0;
  /// Reads at least one byte into `into` (one read at a time).
  virtual void async_read_some(std::span<char> into, ReadDone done) = 0;
  /// Reads what is there without waiting; 0 when nothing is. Sets `eof` when the client finished.
  virtual std::size_t read_now(std::span<char> into, bool& eof) = 0;
  /// Takes as much of `bytes` as it can without waiting; 0 when it cannot take more now (then
  /// wait with async_wait_writable). A failure is reported in `error`.
  virtual std::size_t write_now(std::string_view bytes, boost::system::error_code& error) = 0;
  /// Runs `ready` once write_now can take bytes again (the one wait in flight).
  virtual void async_wait_writable(Ready ready) = 0;
  /// Runs `reset` once, when the client resets the connection (the error: ECONNRESET...), for a
  /// session that reads nothing meanwhile. A FIN is not reported: what the client sent before it
  /// is still to be read. Without an error (a hang-up with nothing pending) the watch just ends;
  /// operation_aborted after close() or when `cancel` is emitted: a read must not be started
  /// while this waits (asio then stops reading speculatively), so cancel it first.
  virtual void async_wait_reset(Ready reset, boost::asio::cancellation_slot cancel) = 0;
  /// Ends the stream gracefully once everything taken is sent: a half-close (TLS: close_notify),
  /// then waiting up to `linger` seconds for the client to close too, so that unread input never
  /// turns our close into a reset that destroys the last reply. Returns false when the stream was
  /// closed at once (`done` is not called), true when it goes on and `done` runs at the end.
  /// `peer_closed`: the client already finished sending.
  virtual bool shutdown(Duration linger, bool peer_closed, std::function<void()> done) = 0;
  /// Closes now; pending operations complete with operation_aborted. Unsent bytes are lost.
  virtual void close() = 0;
  /// False once closed.
  virtual bool is_open() const = 0;
  /// What was negotiated on a TLS stream; null on plaintext.
  virtual const TlsInfo* tls() const { return nullptr; }
};

/// async_wait_reset for a transport over `socket`; `keep` holds the transport while it waits.
void wait_for_reset(Transport::Socket& socket, std::shared_ptr<Transport> keep, Transport::Ready reset,
                    boost::asio::cancellation_slot cancel);

/// Where input read only to be dropped (a lingering stream's) lands: one buffer per thread, shared
/// by every stream, since nobody reads what is in it.
std::span<char> discard_buffer();

/// The plaintext transport over an accepted socket.
std::shared_ptr<Transport> make_plain_transport(Transport::Socket socket);

}  // namespace netserver
