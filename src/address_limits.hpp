#pragma once
/// Per-address limits counted across every process of a server: open connections per address
/// (`max_connections_per_ip`) and a rate of new connections with a burst
/// (`connection_rate_per_ip`, `connection_burst_per_ip`). The table lives in shared memory mapped
/// by the parent before any fork, so PreFork children, Multiplex workers and the Fork parent count
/// one total.
///
/// Crash safety, the reason for the layout: each shard of the table has a robust process-shared
/// mutex (a process killed while holding it hands it to the next locker with EOWNERDEAD; the
/// kernel releases it, nobody waits forever), every change under it is a sequence of single-word
/// stores, and the entry being changed is recorded first, so the next locker can repair a change a
/// killed process left half done. Who holds what is recorded per entry as (process slot, count)
/// cells: when waitpid() reports a child dead, the parent calls reclaim(pid) and gives back exactly
/// what that child still held.

#include <sys/socket.h>
#include <sys/types.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace netserver {

/// What an address is counted under: an IPv4 address, or an IPv6 address cut to its first
/// `ipv6_prefix` bits (one /64 is usually one customer). IPv4-mapped IPv6 counts as IPv4.
struct AddressKey {
  std::uint8_t family = 0;                 ///< AF_INET or AF_INET6
  std::uint8_t prefix = 0;                 ///< bits kept: 32 for IPv4, ipv6_prefix for IPv6
  std::array<std::uint8_t, 16> bytes{};    ///< the address, network order, bits past `prefix` zero

  /// The key of a peer address; nullopt for a unix-socket peer or another family (not limited).
  /// `ipv6_prefix` is 1 to 128.
  static std::optional<AddressKey> of(const sockaddr* address, socklen_t length, int ipv6_prefix);
  /// "192.0.2.1", "2001:db8:1:2::/64" (no suffix for a whole IPv6 address).
  std::string text() const;
  bool operator==(const AddressKey&) const = default;
};

/// How the table limits and how big it is.
struct AddressLimitSettings {
  std::uint32_t max_connections = 0;  ///< open connections per key (0: not limited)
  double rate = 0;                    ///< new connections per second per key (0: not limited)
  std::uint32_t burst = 0;            ///< new connections at once before the rate applies (0: the rate, at least 1)
  std::size_t capacity = 16384;       ///< keys tracked at once (rounded up to a power of two, at least 1024)
  /// Processes that may use the table at the same time (children, and the parent when it
  /// accepts). A process beyond them is let through uncounted (Verdict::untracked).
  std::size_t process_slots = 128;
  std::chrono::seconds log_interval{60};  ///< a refused key is reported for logging at most this often
  /// Tests only: runs inside the critical section of every grant, half-way through its stores,
  /// so that a test can kill a process there.
  std::function<void()> while_locked_for_test;

  /// True when anything is limited.
  bool enabled() const { return max_connections > 0 || rate > 0; }
};

/// The shared table. Create it in the parent before forking; every process then uses its
/// inherited copy. One process's calls may come from one thread at a time.
class AddressLimits {
 public:
  using Clock = std::chrono::steady_clock;  ///< CLOCK_MONOTONIC: the same in every process

  /// What try_acquire decided.
  enum class Verdict {
    granted,               ///< counted; release() it when the connection ends
    too_many_connections,  ///< the key has max_connections open: refuse the client
    too_fast,              ///< the key used its burst and the rate has not refilled it: refuse
    untracked,             ///< let through uncounted: no room in the table or no process slot (safe side: a full table must not lock out new addresses)
  };
  /// The answer to one try_acquire.
  struct Admission {
    Verdict verdict = Verdict::untracked;  ///< what was decided
    std::int32_t entry = -1;     ///< the counted entry (release() needs it); -1 when nothing was counted
    std::uint32_t open = 0;      ///< the key's open connections, this one included when granted
    /// On a refusal: true when this is the first refusal of the key within log_interval, across
    /// every process; log it then, with `refused_unlogged` (the refusals not logged before it).
    bool log = false;
    std::uint32_t refused_unlogged = 0;  ///< refusals of the key since the last one reported for logging
    /// True for too_many_connections and too_fast.
    bool refused() const { return verdict == Verdict::too_many_connections || verdict == Verdict::too_fast; }
  };
  /// Counters over every process since the table was made.
  struct Stats {
    std::uint64_t refused_connections = 0;  ///< too_many_connections answers
    std::uint64_t refused_rate = 0;         ///< too_fast answers
    std::uint64_t untracked = 0;            ///< untracked answers
    std::uint64_t reclaimed = 0;            ///< connections given back by reclaim()
    std::uint64_t repaired = 0;             ///< shards repaired after a process died holding their lock
  };

  /// Maps the table (shared, anonymous). Throws Error when mmap or the mutex set-up fails.
  explicit AddressLimits(AddressLimitSettings settings);
  /// Unmaps this process's view; other processes keep theirs.
  ~AddressLimits();
  AddressLimits(const AddressLimits&) = delete;
  AddressLimits& operator=(const AddressLimits&) = delete;

  /// Counts a new connection from `key` unless its limits refuse it. A refused attempt uses no
  /// rate token. Granted admissions must be released by the same process (release() in another
  /// process is a no-op for it: a Fork child's copy of the parent's admission releases nothing).
  Admission try_acquire(const AddressKey& key, Clock::time_point now = Clock::now());
  /// Gives back a granted admission (no-op for any other). Call once per grant.
  void release(const Admission& admission);
  /// After waitpid() reported `pid` gone: gives back every connection it still held and frees its
  /// process slot. Call it before forking again (a new child may get the same pid). Returns the
  /// number of connections given back.
  std::size_t reclaim(pid_t pid);
  /// Open connections counted for `key` across every process.
  std::uint32_t open_connections(const AddressKey& key) const;
  /// The counters.
  Stats stats() const;
  /// The settings it was made with.
  const AddressLimitSettings& settings() const { return settings_; }

  struct Table;  ///< the shared memory layout (address_limits.cpp)

 private:
  int my_slot();

  AddressLimitSettings settings_;
  std::size_t mapped_bytes_ = 0;
  Table* table_ = nullptr;
  int slot_ = -1;                     // this process's slot, claimed on first use
  unsigned slot_generation_ = 0;      // the fork generation slot_ was claimed in
};

/// One granted admission, given back once: when release() is called or the holder is destroyed.
/// Moves with the client it counts (accept path -> session; the Fork parent keeps it per child).
class AddressHold {
 public:
  AddressHold() = default;
  AddressHold(AddressLimits& limits, const AddressLimits::Admission& admission)
      : limits_(admission.verdict == AddressLimits::Verdict::granted ? &limits : nullptr), entry_(admission.entry) {}
  ~AddressHold() { release(); }
  AddressHold(AddressHold&& other) noexcept
      : limits_(std::exchange(other.limits_, nullptr)), entry_(other.entry_) {}
  AddressHold& operator=(AddressHold&& other) noexcept {
    if (this != &other) {
      release();
      limits_ = std::exchange(other.limits_, nullptr);
      entry_ = other.entry_;
    }
    return *this;
  }
  /// Gives the connection back to the table (no-op when nothing is held, or already given back).
  void release() {
    if (!limits_) return;
    AddressLimits::Admission admission;
    admission.verdict = AddressLimits::Verdict::granted;
    admission.entry = entry_;
    std::exchange(limits_, nullptr)->release(admission);
  }
  /// True while a connection is held.
  bool holds() const { return limits_ != nullptr; }

 private:
  AddressLimits* limits_ = nullptr;
  std::int32_t entry_ = -1;
};

/// Lets a process log an event about a key at most once per interval (an address refused for a
/// reason the shared table does not see: an untrusted PROXY sender, a malformed header). Per
/// process; remembers at most `capacity` keys, forgetting the oldest first.
class LogThrottle {
 public:
  /// At most one line per key per `interval`.
  explicit LogThrottle(std::chrono::seconds interval = std::chrono::seconds(60), std::size_t capacity = 1024);
  /// True when the event for `key` should be logged now; `suppressed` (when given) is set to the
  /// events for the key not logged since the last logged one.
  bool allow(std::string_view key, std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now(),
             std::uint64_t* suppressed = nullptr);

 private:
  struct Seen {
    std::chrono::steady_clock::time_point logged;
    std::uint64_t suppressed = 0;
  };
  std::chrono::steady_clock::duration interval_;
  std::size_t capacity_;
  std::map<std::string, Seen, std::less<>> seen_;
};

}  // namespace netserver
