#include "address_limits.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <random>

#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"

namespace netserver {

// --- AddressKey --------------------------------------------------------------------------------

std::optional<AddressKey> AddressKey::of(const sockaddr* address, socklen_t length, int ipv6_prefix) {
  AddressKey key;
  if (address->sa_family == AF_INET && length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    key.family = AF_INET;
    key.prefix = 32;
    std::memcpy(key.bytes.data(), &reinterpret_cast<const sockaddr_in*>(address)->sin_addr, 4);
    return key;
  }
  if (address->sa_family != AF_INET6 || length < static_cast<socklen_t>(sizeof(sockaddr_in6))) return std::nullopt;
  const in6_addr& v6 = reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr;
  if (IN6_IS_ADDR_V4MAPPED(&v6)) {
    key.family = AF_INET;
    key.prefix = 32;
    std::memcpy(key.bytes.data(), v6.s6_addr + 12, 4);
    return key;
  }
  const int prefix = std::clamp(ipv6_prefix, 1, 128);
  key.family = AF_INET6;
  key.prefix = static_cast<std::uint8_t>(prefix);
  std::memcpy(key.bytes.data(), v6.s6_addr, 16);
  for (int bit = prefix; bit < 128; ++bit) key.bytes[bit / 8] &= static_cast<std::uint8_t>(~(0x80u >> (bit % 8)));
  return key;
}

std::string AddressKey::text() const {
  char text[INET6_ADDRSTRLEN] = {};
  ::inet_ntop(family, bytes.data(), text, sizeof text);
  if (family == AF_INET6 && prefix < 128) return fmt::format("{}/{}", text, prefix);
  return text;
}

// --- the shared table ----------------------------------------------------------------------------
//
// Every field below lives in the shared mapping and starts as zero bytes (mmap's), which is each
// field's empty state; fields are accessed through std::atomic_ref, so a store a killed process
// made is either wholly there or not at all. Entries, cells and the dirty marks change only under
// their shard's lock.

namespace {

constexpr std::size_t shard_count = 64;   // locks; a power of two
constexpr std::size_t window = 16;        // entries probed for a key, within its shard
constexpr std::size_t cache_line = 64;
constexpr std::uint32_t count_bits = 20;  // a cell: (slot + 1) << count_bits | count
constexpr std::uint32_t count_mask = (1u << count_bits) - 1;
constexpr std::size_t max_slots = (1u << (32 - count_bits)) - 1;

template <class T>
std::atomic_ref<T> shared(T& field) {
  return std::atomic_ref<T>(field);
}

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::int64_t nanoseconds(AddressLimits::Clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count();
}

// Bumped in a child after every fork: a slot claimed before the fork belongs to the parent.
std::atomic<unsigned> fork_generation{1};
void register_fork_handler() {
  static const bool registered = [] {
    return ::pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1, std::memory_order_relaxed); }) == 0;
  }();
  if (!registered) throw Error("address limits: pthread_atfork() failed");
}

std::size_t round_up(std::size_t bytes) { return (bytes + cache_line - 1) / cache_line * cache_line; }

}  // namespace

namespace {

struct alignas(64) Shard {
  pthread_mutex_t mutex;  // robust, process-shared
  std::int32_t dirty;     // 1 + the entry whose stores are under way; 0 when none
};

struct Entry {
  std::uint32_t in_use;            // 1 once the key below is complete
  std::uint32_t open;              // the sum of the entry's cells: a cache, repaired from them
  std::int64_t next_conforming;    // the rate's theoretical arrival time (GCRA), ns
  std::int64_t logged_at;          // ns of the last refusal reported for logging; 0: never
  std::uint32_t refused_unlogged;  // refusals since then
  std::uint8_t family;
  std::uint8_t prefix;
  std::array<std::uint8_t, 16> bytes;

  bool holds(const AddressKey& key) const {
    return family == key.family && prefix == key.prefix && bytes == key.bytes;
  }
};

}  // namespace

struct AddressLimits::Table {
  // Fixed at creation.
  std::size_t capacity, per_shard, cells_per_entry, slots;
  std::uint64_t seed;
  std::int64_t emission_interval, burst_tolerance, log_interval;  // ns
  std::uint32_t max_connections;
  // Counters.
  std::uint64_t refused_connections, refused_rate, untracked, reclaimed, repaired;
  // Offsets of the arrays from the table's start.
  std::size_t shards_at, entries_at, cells_at, slots_at;

  template <class T>
  T* array(std::size_t offset) {
    return reinterpret_cast<T*>(reinterpret_cast<char*>(this) + offset);
  }
  Shard& shard(std::size_t index) { return array<Shard>(shards_at)[index]; }
  Entry& entry(std::size_t index) { return array<Entry>(entries_at)[index]; }
  std::uint32_t* cells(std::size_t entry) { return array<std::uint32_t>(cells_at) + entry * cells_per_entry; }
  pid_t& slot(std::size_t index) { return array<pid_t>(slots_at)[index]; }

  std::size_t shard_of(std::size_t entry) const { return entry / per_shard; }
  std::uint64_t hash(const AddressKey& key) const {
    std::uint64_t low = 0, high = 0;
    std::memcpy(&low, key.bytes.data(), 8);
    std::memcpy(&high, key.bytes.data() + 8, 8);
    return mix(mix(low ^ seed) ^ high ^ (std::uint64_t{key.family} << 8 | key.prefix));
  }
  void count(std::uint64_t& counter) { shared(counter).fetch_add(1, std::memory_order_relaxed); }

  // Makes the entry a killed process was changing consistent again: its open count is its cells'.
  void repair(Shard& shard) {
    const std::int32_t dirty = shared(shard.dirty).load();
    if (dirty > 0) {
      Entry& e = entry(static_cast<std::size_t>(dirty - 1));
      std::uint32_t* cell = cells(static_cast<std::size_t>(dirty - 1));
      std::uint32_t open = 0;
      for (std::size_t i = 0; i < cells_per_entry; ++i) open += shared(cell[i]).load() & count_mask;
      shared(e.open).store(open);
      shared(shard.dirty).store(0);
    }
    count(repaired);
  }
};

namespace {

// Holds a shard's lock; a lock whose holder died is repaired and taken over.
class ShardLock {
 public:
  ShardLock(AddressLimits::Table& table, Shard& shard) : shard_(shard) {
    const int result = ::pthread_mutex_lock(&shard.mutex);
    if (result == EOWNERDEAD) {
      table.repair(shard);
      ::pthread_mutex_consistent(&shard.mutex);
    } else if (result != 0) {
      log::error("{}", system_error_text("address limits: pthread_mutex_lock()", result));
      return;
    }
    locked_ = true;
  }
  ~ShardLock() {
    if (locked_) ::pthread_mutex_unlock(&shard_.mutex);
  }
  ShardLock(const ShardLock&) = delete;
  ShardLock& operator=(const ShardLock&) = delete;
  bool locked() const { return locked_; }

 private:
  Shard& shard_;
  bool locked_ = false;
};

// Marks an entry as being changed for as long as it lives (see Table::repair).
class DirtyMark {
 public:
  DirtyMark(Shard& shard, std::size_t entry) : shard_(shard) {
    shared(shard.dirty).store(static_cast<std::int32_t>(entry + 1));
  }
  ~DirtyMark() { shared(shard_.dirty).store(0, std::memory_order_release); }
  DirtyMark(const DirtyMark&) = delete;
  DirtyMark& operator=(const DirtyMark&) = delete;

 private:
  Shard& shard_;
};

void init_mutex(pthread_mutex_t& mutex) {
  pthread_mutexattr_t attributes;
  ::pthread_mutexattr_init(&attributes);
  int result = ::pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  if (result == 0) result = ::pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  if (result == 0) result = ::pthread_mutex_init(&mutex, &attributes);
  ::pthread_mutexattr_destroy(&attributes);
  if (result != 0) throw Error(system_error_text("address limits: robust process-shared pthread mutex", result));
}

// The entry holding `key` in its window, else a reusable one (free, or holding nothing and no
// rate debt) made to hold it; -1 when the window is full.
std::int64_t find_or_claim(AddressLimits::Table& table, Shard& shard, std::size_t shard_index, const AddressKey& key,
                           std::int64_t now) {
  const std::uint64_t start = table.hash(key) / shard_count;
  std::int64_t reusable = -1;
  for (std::size_t i = 0; i < window; ++i) {
    const std::size_t index = shard_index * table.per_shard + (start + i) % table.per_shard;
    Entry& e = table.entry(index);
    if (!shared(e.in_use).load()) {
      if (reusable < 0) reusable = static_cast<std::int64_t>(index);
      continue;
    }
    if (e.holds(key)) return static_cast<std::int64_t>(index);
    if (reusable < 0 && shared(e.open).load() == 0 && shared(e.next_conforming).load() <= now)
      reusable = static_cast<std::int64_t>(index);
  }
  if (reusable < 0) return -1;
  Entry& e = table.entry(static_cast<std::size_t>(reusable));
  const DirtyMark mark(shard, static_cast<std::size_t>(reusable));
  shared(e.in_use).store(0);
  std::atomic_thread_fence(std::memory_order_seq_cst);  // "free" lands before the key changes
  e.family = key.family;
  e.prefix = key.prefix;
  e.bytes = key.bytes;
  shared(e.next_conforming).store(0);
  shared(e.logged_at).store(0);
  shared(e.refused_unlogged).store(0);
  shared(e.in_use).store(1, std::memory_order_release);
  return reusable;
}

// The cell of `slot` in an entry; with `claim`, one for it when it has none (nullptr when there is
// no cell to take). Cells are probed from slot % cells_per_entry. A slot keeps its cell, at count
// 0 too, and no cell becomes all-zero again, so a lookup may stop at the first never-used cell:
// the usual case touches one cell. A slot without a cell takes the first one holding no
// connection (never used, or another slot's at count 0; that slot will look for a new one).
std::uint32_t* cell_for(AddressLimits::Table& table, std::size_t entry, std::uint32_t slot, bool claim) {
  std::uint32_t* cells = table.cells(entry);
  std::uint32_t* idle = nullptr;
  for (std::size_t i = 0; i < table.cells_per_entry; ++i) {
    std::uint32_t* cell = &cells[(slot + i) % table.cells_per_entry];
    const std::uint32_t value = shared(*cell).load();
    if (value >> count_bits == slot + 1) return cell;
    if (value == 0) return claim ? (idle ? idle : cell) : nullptr;
    if (!idle && (value & count_mask) == 0) idle = cell;
  }
  return claim ? idle : nullptr;
}

std::uint32_t cell_value(std::uint32_t slot, std::uint32_t count) { return (slot + 1) << count_bits | count; }

// Fills in the logging part of a refusal: reported once per log_interval per entry.
void note_refusal(AddressLimits::Table& table, Entry& e, std::int64_t now, AddressLimits::Admission& admission) {
  const std::int64_t logged_at = shared(e.logged_at).load();
  if (logged_at != 0 && now - logged_at < table.log_interval) {
    shared(e.refused_unlogged).fetch_add(1);
    return;
  }
  admission.log = true;
  admission.refused_unlogged = shared(e.refused_unlogged).exchange(0);
  shared(e.logged_at).store(std::max<std::int64_t>(now, 1));
}

}  // namespace

// --- AddressLimits ---------------------------------------------------------------------------------

AddressLimits::AddressLimits(AddressLimitSettings settings) : settings_(std::move(settings)) {
  register_fork_handler();
  const std::size_t capacity = std::bit_ceil(std::max<std::size_t>(settings_.capacity, 1024));
  const std::size_t slots = std::clamp<std::size_t>(settings_.process_slots, 1, max_slots);
  // One cell per process that can hold the key at once: with max_connections cells, or one per
  // slot, a key below its limit always has a free cell for a process that holds none of it yet.
  const std::size_t cells_per_entry = std::min<std::size_t>(settings_.max_connections, slots);

  const std::size_t shards_at = round_up(sizeof(Table));
  const std::size_t entries_at = shards_at + round_up(shard_count * sizeof(Shard));
  const std::size_t cells_at = entries_at + round_up(capacity * sizeof(Entry));
  const std::size_t slots_at = cells_at + round_up(capacity * cells_per_entry * sizeof(std::uint32_t));
  mapped_bytes_ = slots_at + round_up(slots * sizeof(pid_t));
  void* memory = ::mmap(nullptr, mapped_bytes_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED)
    throw Error(system_error_text(fmt::format("address limits: mmap() of {} bytes", mapped_bytes_), errno));
  table_ = new (memory) Table{};
  Table& table = *table_;
  table.capacity = capacity;
  table.per_shard = capacity / shard_count;
  table.cells_per_entry = cells_per_entry;
  table.slots = slots;
  table.seed = (std::uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();  // keys an attacker cannot aim at one window
  table.max_connections = std::min<std::uint32_t>(settings_.max_connections, count_mask);
  if (settings_.rate > 0) {
    table.emission_interval = static_cast<std::int64_t>(1e9 / settings_.rate);
    const double burst = settings_.burst > 0 ? settings_.burst : std::max(1.0, std::ceil(settings_.rate));
    table.burst_tolerance = static_cast<std::int64_t>((burst - 1) * static_cast<double>(table.emission_interval));
  }
  table.log_interval = std::chrono::duration_cast<std::chrono::nanoseconds>(settings_.log_interval).count();
  table.shards_at = shards_at;
  table.entries_at = entries_at;
  table.cells_at = cells_at;
  table.slots_at = slots_at;
  try {
    for (std::size_t i = 0; i < shard_count; ++i) init_mutex(table.shard(i).mutex);
  } catch (...) {
    ::munmap(memory, mapped_bytes_);
    throw;
  }
}

AddressLimits::~AddressLimits() { ::munmap(table_, mapped_bytes_); }

// This process's slot, claimed on first use (and again in a forked child); -1 when all are taken.
int AddressLimits::my_slot() {
  const unsigned generation = fork_generation.load(std::memory_order_relaxed);
  if (slot_ >= 0 && slot_generation_ == generation) return slot_;
  const pid_t pid = ::getpid();
  slot_ = -1;
  for (std::size_t i = 0; i < table_->slots; ++i) {
    pid_t expected = 0;
    if (shared(table_->slot(i)).compare_exchange_strong(expected, pid) || expected == pid) {
      slot_ = static_cast<int>(i);
      break;
    }
  }
  slot_generation_ = generation;
  return slot_;
}

AddressLimits::Admission AddressLimits::try_acquire(const AddressKey& key, Clock::time_point when) {
  Table& table = *table_;
  Admission admission;
  const bool counting = table.max_connections > 0;
  const int slot = counting ? my_slot() : 0;
  const std::size_t shard_index = table.hash(key) % shard_count;
  Shard& shard = table.shard(shard_index);
  const std::int64_t now = nanoseconds(when);
  const ShardLock lock(table, shard);
  const std::int64_t index = slot < 0 || !lock.locked() ? -1 : find_or_claim(table, shard, shard_index, key, now);
  if (index < 0) {
    table.count(table.untracked);
    return admission;
  }
  Entry& e = table.entry(static_cast<std::size_t>(index));
  admission.open = shared(e.open).load();
  const std::int64_t next_conforming = shared(e.next_conforming).load();
  if (counting && admission.open >= table.max_connections) {
    admission.verdict = Verdict::too_many_connections;
    table.count(table.refused_connections);
  } else if (table.emission_interval > 0 && now < next_conforming - table.burst_tolerance) {
    admission.verdict = Verdict::too_fast;
    table.count(table.refused_rate);
  }
  if (admission.refused()) {
    note_refusal(table, e, now, admission);
    return admission;
  }
  std::uint32_t* cell = counting ? cell_for(table, static_cast<std::size_t>(index), static_cast<std::uint32_t>(slot), true) : nullptr;
  if (counting && !cell) {  // cannot happen with cells_per_entry chosen as above; safe side if it does
    table.count(table.untracked);
    return admission;
  }
  const DirtyMark mark(shard, static_cast<std::size_t>(index));
  if (cell) {
    const std::uint32_t held = shared(*cell).load() & count_mask;
    shared(*cell).store(cell_value(static_cast<std::uint32_t>(slot), held + 1));
    if (settings_.while_locked_for_test) settings_.while_locked_for_test();
    shared(e.open).store(++admission.open);
    admission.entry = static_cast<std::int32_t>(index);
  }
  if (table.emission_interval > 0) shared(e.next_conforming).store(std::max(next_conforming, now) + table.emission_interval);
  admission.verdict = Verdict::granted;
  return admission;
}

void AddressLimits::release(const Admission& admission) {
  if (admission.verdict != Verdict::granted || admission.entry < 0) return;
  // Only the process that acquired has a slot of this fork generation; anyone else releases nothing.
  if (slot_ < 0 || slot_generation_ != fork_generation.load(std::memory_order_relaxed)) return;
  Table& table = *table_;
  const auto index = static_cast<std::size_t>(admission.entry);
  Shard& shard = table.shard(table.shard_of(index));
  const ShardLock lock(table, shard);
  std::uint32_t* cell = lock.locked() ? cell_for(table, index, static_cast<std::uint32_t>(slot_), false) : nullptr;
  const std::uint32_t held = cell ? shared(*cell).load() & count_mask : 0;
  if (held == 0) return;  // this process holds none of it: never held, released twice, or reclaimed
  Entry& e = table.entry(index);
  const DirtyMark mark(shard, index);
  shared(*cell).store(cell_value(static_cast<std::uint32_t>(slot_), held - 1));
  shared(e.open).store(shared(e.open).load() - 1);
}

std::size_t AddressLimits::reclaim(pid_t pid) {
  Table& table = *table_;
  std::size_t slot = 0;
  while (slot < table.slots && shared(table.slot(slot)).load() != pid) ++slot;
  if (slot == table.slots || pid <= 0) return 0;
  std::size_t given_back = 0;
  const auto owner = static_cast<std::uint32_t>(slot + 1);
  for (std::size_t s = 0; s < shard_count && table.cells_per_entry > 0; ++s) {
    Shard& shard = table.shard(s);
    const ShardLock lock(table, shard);
    for (std::size_t index = s * table.per_shard; index < (s + 1) * table.per_shard; ++index) {
      Entry& e = table.entry(index);
      if (!shared(e.in_use).load() || shared(e.open).load() == 0) continue;
      std::uint32_t* cell = cell_for(table, index, owner - 1, false);
      const std::uint32_t held = cell ? shared(*cell).load() & count_mask : 0;
      if (held == 0) continue;
      const DirtyMark mark(shard, index);
      shared(e.open).store(shared(e.open).load() - held);
      shared(*cell).store(cell_value(owner - 1, 0));  // the cell stays the slot's (see cell_for)
      given_back += held;
    }
  }
  shared(table.reclaimed).fetch_add(given_back, std::memory_order_relaxed);
  shared(table.slot(slot)).store(0);  // free for the next process
  return given_back;
}

std::uint32_t AddressLimits::open_connections(const AddressKey& key) const {
  Table& table = *table_;
  const std::size_t shard_index = table.hash(key) % shard_count;
  const ShardLock lock(table, table.shard(shard_index));
  const std::uint64_t start = table.hash(key) / shard_count;
  for (std::size_t i = 0; i < window; ++i) {
    Entry& e = table.entry(shard_index * table.per_shard + (start + i) % table.per_shard);
    if (shared(e.in_use).load() && e.holds(key)) return shared(e.open).load();
  }
  return 0;
}

AddressLimits::Stats AddressLimits::stats() const {
  Table& table = *table_;
  return Stats{shared(table.refused_connections).load(), shared(table.refused_rate).load(),
               shared(table.untracked).load(), shared(table.reclaimed).load(), shared(table.repaired).load()};
}

// --- LogThrottle ---------------------------------------------------------------------------------

LogThrottle::LogThrottle(std::chrono::seconds interval, std::size_t capacity)
    : interval_(interval), capacity_(std::max<std::size_t>(capacity, 1)) {}

bool LogThrottle::allow(std::string_view key, std::chrono::steady_clock::time_point now, std::uint64_t* suppressed) {
  auto it = seen_.find(key);
  if (it != seen_.end() && now - it->second.logged < interval_) {
    ++it->second.suppressed;
    return false;
  }
  if (it == seen_.end()) {
    if (seen_.size() >= capacity_) {  // forget the key logged longest ago
      seen_.erase(std::min_element(seen_.begin(), seen_.end(), [](const auto& a, const auto& b) {
        return a.second.logged < b.second.logged;
      }));
    }
    it = seen_.emplace(std::string(key), Seen{}).first;
  }
  if (suppressed) *suppressed = it->second.suppressed;
  it->second = Seen{now, 0};
  return true;
}

}  // namespace netserver
