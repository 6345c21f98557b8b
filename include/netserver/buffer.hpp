#pragma once
/// Input handling shared by every personality: the Buffer a handler consumes from, the line
/// splitter behind LineHandler, and the InputQueue that keeps what a handler left for later.

#include <cstddef>
#include <string>
#include <string_view>

namespace netserver {

/// The unconsumed input of a session, as handed to Handler::on_input. Consume from the left
/// what you have handled; what you leave comes back, with newer bytes after it, next time.
class Buffer {
 public:
  /// A view of `size` bytes at `data` (not copied); `eof` when the client finished sending.
  Buffer(const char* data, std::size_t size, bool eof) : data_(data), size_(size), eof_(eof) {}

  /// The bytes not consumed yet.
  std::string_view view() const { return {data_ + consumed_, size_ - consumed_}; }
  /// Pointer to the first unconsumed byte.
  const char* data() const { return data_ + consumed_; }
  /// Number of unconsumed bytes.
  std::size_t size() const { return size_ - consumed_; }
  /// True when everything has been consumed.
  bool empty() const { return consumed_ == size_; }
  /// Marks the first `n` unconsumed bytes as handled (clamped to size()).
  void consume(std::size_t n) { consumed_ += n < size() ? n : size(); }
  /// Bytes consumed so far through this Buffer.
  std::size_t consumed() const { return consumed_; }
  /// True on the last call for this session: the peer has finished sending, so anything left
  /// now (a last line without its line end) will never be completed.
  bool eof() const { return eof_; }

 private:
  const char* data_;
  std::size_t size_;
  std::size_t consumed_ = 0;
  bool eof_;
};

/// What next_line found.
enum class LineStatus {
  line,      ///< a complete line (or, at EOF, the unterminated last one)
  partial,   ///< no complete line yet; wait for more input
  too_long,  ///< the line is longer than max_line bytes (line end not counted)
};

/// Takes the next line off the front of `in`, without its LF or CRLF. Lines end at LF; one CR
/// right before the LF is dropped. At EOF an unterminated last line is returned as a line.
/// `line` views `in`'s storage and is valid until that storage changes.
LineStatus next_line(Buffer& in, std::size_t max_line, std::string_view& line);

/// A session's pending input: what the handler left unconsumed, bounded by `limit` bytes.
class InputQueue {
 public:
  /// `limit`: pending input may not reach this many bytes.
  explicit InputQueue(std::size_t limit) : limit_(limit) {}

  /// Hands `chunk`, after whatever was left before, to `consume(Buffer&)`, then keeps what it
  /// left. Returns false when what is left has reached the limit (the input is too long).
  template <class Consume>
  bool feed(std::string_view chunk, bool eof, Consume&& consume) {
    if (pending_.empty()) {
      Buffer in(chunk.data(), chunk.size(), eof);
      consume(in);
      if (!in.empty()) pending_.assign(in.data(), in.size());
    } else {
      pending_.append(chunk);
      Buffer in(pending_.data(), pending_.size(), eof);
      consume(in);
      pending_.erase(0, in.consumed());
      release_if_empty();
    }
    return pending_.size() < limit_;
  }
  /// Bytes pending.
  std::size_t size() const { return pending_.size(); }
  /// Largest read that keeps pending input plus the new bytes within the limit when something
  /// is pending (0 means: no limit needed, nothing is pending).
  std::size_t room() const { return pending_.empty() ? 0 : limit_ - pending_.size(); }
  /// Forgets pending input and its memory.
  void clear() { std::string().swap(pending_); }

 private:
  void release_if_empty() {
    if (pending_.empty() && pending_.capacity() > 4096) clear();
  }
  std::string pending_;
  std::size_t limit_;
};

}  // namespace netserver
