// Per-address limits (src/address_limits.*): keys, open-connection counts and the rate across
// processes, a full table, a process killed holding connections or a lock, and the log throttle.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "address_limits.hpp"

using namespace netserver;
using namespace std::chrono_literals;
using Verdict = AddressLimits::Verdict;

namespace {

sockaddr_storage socket_address(const std::string& ip) {
  sockaddr_storage storage{};
  if (ip.find(':') == std::string::npos) {
    auto& v4 = reinterpret_cast<sockaddr_in&>(storage);
    v4.sin_family = AF_INET;
    REQUIRE(::inet_pton(AF_INET, ip.c_str(), &v4.sin_addr) == 1);
  } else {
    auto& v6 = reinterpret_cast<sockaddr_in6&>(storage);
    v6.sin6_family = AF_INET6;
    REQUIRE(::inet_pton(AF_INET6, ip.c_str(), &v6.sin6_addr) == 1);
  }
  return storage;
}

AddressKey key(const std::string& ip, int ipv6_prefix = 64) {
  const sockaddr_storage storage = socket_address(ip);
  auto made = AddressKey::of(reinterpret_cast<const sockaddr*>(&storage), sizeof storage, ipv6_prefix);
  REQUIRE(made);
  return *made;
}

const AddressLimits::Clock::time_point start = AddressLimits::Clock::time_point{} + 1000s;

AddressLimitSettings connections(std::uint32_t max) {
  AddressLimitSettings settings;
  settings.max_connections = max;
  return settings;
}

AddressLimitSettings rate(double per_second, std::uint32_t burst) {
  AddressLimitSettings settings;
  settings.rate = per_second;
  settings.burst = burst;
  return settings;
}

// A forked child that runs `body` and _exits with its result; never returns into Catch.
template <class Body>
pid_t spawn(Body body) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) ::_exit(body());
  return pid;
}

int wait_for(pid_t pid) {
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return status;
}

// One byte through a pipe: the children tell the parent where they are; the parent lets them go on.
struct Pipe {
  int fds[2] = {-1, -1};
  Pipe() { REQUIRE(::pipe(fds) == 0); }
  ~Pipe() {
    ::close(fds[0]);
    ::close(fds[1]);
  }
  void put(char c = 'x') const { (void)!::write(fds[1], &c, 1); }
  char take() const {
    char c = 0;
    return ::read(fds[0], &c, 1) == 1 ? c : '\0';
  }
};

}  // namespace

TEST_CASE("address keys: IPv4 and IPv4-mapped as IPv4 and IPv6 by prefix and none for unix peers", "[limits]") {
  CHECK(key("192.0.2.1").text() == "192.0.2.1");
  CHECK(key("::ffff:192.0.2.1") == key("192.0.2.1"));
  CHECK(key("::ffff:192.0.2.1").family == AF_INET);
  CHECK(key("2001:db8:1:2:aaaa::1") == key("2001:db8:1:2:bbbb::2"));  // one /64
  CHECK_FALSE(key("2001:db8:1:2::1") == key("2001:db8:1:3::1"));
  CHECK(key("2001:db8:1:2:aaaa::1").text() == "2001:db8:1:2::/64");
  CHECK(key("2001:db8:1:2::1", 48) == key("2001:db8:1:ffff::1", 48));
  CHECK(key("2001:db8:1:2::1", 48).text() == "2001:db8:1::/48");
  CHECK(key("2001:db8::1", 128).text() == "2001:db8::1");
  CHECK_FALSE(key("2001:db8::1", 128) == key("2001:db8::2", 128));
  CHECK(key("2001:db8:1:2:3:4:5:ff", 121).text() == "2001:db8:1:2:3:4:5:80/121");  // a prefix inside a byte

  sockaddr_un unix_peer{};
  unix_peer.sun_family = AF_UNIX;
  CHECK_FALSE(AddressKey::of(reinterpret_cast<const sockaddr*>(&unix_peer), sizeof unix_peer, 64));
  sockaddr_storage v4 = socket_address("192.0.2.1");
  CHECK_FALSE(AddressKey::of(reinterpret_cast<const sockaddr*>(&v4), 4, 64));  // a length too short for its family
}

TEST_CASE("open connections are limited per address and released", "[limits]") {
  AddressLimits limits(connections(3));
  std::vector<AddressLimits::Admission> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(limits.try_acquire(key("127.0.0.2"), start));
    CHECK(held.back().verdict == Verdict::granted);
    CHECK(held.back().open == static_cast<std::uint32_t>(i + 1));
  }
  const auto fourth = limits.try_acquire(key("127.0.0.2"), start);
  CHECK(fourth.verdict == Verdict::too_many_connections);
  CHECK(fourth.refused());
  CHECK(fourth.open == 3);
  limits.release(fourth);  // a refusal releases nothing
  CHECK(limits.open_connections(key("127.0.0.2")) == 3);

  const auto other = limits.try_acquire(key("127.0.0.3"), start);  // another address is served
  CHECK(other.verdict == Verdict::granted);

  for (std::uint32_t open = 2; const auto& admission : held) {
    limits.release(admission);
    CHECK(limits.open_connections(key("127.0.0.2")) == open--);
  }
  limits.release(held.front());  // more releases than grants: this process holds none, nothing changes
  CHECK(limits.open_connections(key("127.0.0.2")) == 0);
  CHECK(limits.try_acquire(key("127.0.0.2"), start).verdict == Verdict::granted);
  CHECK(limits.stats().refused_connections == 1);
}

TEST_CASE("IPv6 clients of one prefix share a count", "[limits]") {
  AddressLimits limits(connections(2));
  CHECK(limits.try_acquire(key("2001:db8:0:1::10"), start).verdict == Verdict::granted);
  CHECK(limits.try_acquire(key("2001:db8:0:1::20"), start).verdict == Verdict::granted);
  CHECK(limits.try_acquire(key("2001:db8:0:1::30"), start).verdict == Verdict::too_many_connections);
  CHECK(limits.try_acquire(key("2001:db8:0:2::10"), start).verdict == Verdict::granted);
}

TEST_CASE("new connections per address follow a rate with a burst", "[limits]") {
  AddressLimits limits(rate(10, 3));  // 10 per second, 3 at once
  for (int i = 0; i < 3; ++i) CHECK(limits.try_acquire(key("127.0.0.2"), start).verdict == Verdict::granted);
  CHECK(limits.try_acquire(key("127.0.0.2"), start).verdict == Verdict::too_fast);
  CHECK(limits.try_acquire(key("127.0.0.3"), start).verdict == Verdict::granted);  // its own bucket
  // A refused attempt uses no token: 100 ms later exactly one more fits.
  for (int i = 0; i < 5; ++i) CHECK(limits.try_acquire(key("127.0.0.2"), start + 50ms).verdict == Verdict::too_fast);
  CHECK(limits.try_acquire(key("127.0.0.2"), start + 100ms).verdict == Verdict::granted);
  CHECK(limits.try_acquire(key("127.0.0.2"), start + 100ms).verdict == Verdict::too_fast);
  // After a quiet second the whole burst is back, and no more.
  for (int i = 0; i < 3; ++i) CHECK(limits.try_acquire(key("127.0.0.2"), start + 2s).verdict == Verdict::granted);
  CHECK(limits.try_acquire(key("127.0.0.2"), start + 2s).verdict == Verdict::too_fast);
  CHECK(limits.stats().refused_rate == 8);

  AddressLimits default_burst(rate(5, 0));  // burst 0: one second's worth
  int granted = 0;
  for (int i = 0; i < 10; ++i) granted += default_burst.try_acquire(key("127.0.0.2"), start).verdict == Verdict::granted;
  CHECK(granted == 5);
}

TEST_CASE("both limits together: the count is checked first and a refusal costs no token", "[limits]") {
  AddressLimitSettings settings = connections(1);
  settings.rate = 1;
  settings.burst = 2;
  AddressLimits limits(settings);
  const auto first = limits.try_acquire(key("127.0.0.2"), start);
  REQUIRE(first.verdict == Verdict::granted);
  CHECK(limits.try_acquire(key("127.0.0.2"), start).verdict == Verdict::too_many_connections);
  limits.release(first);
  CHECK(limits.try_acquire(key("127.0.0.2"), start).verdict == Verdict::granted);  // the burst's second token
}

TEST_CASE("a refused address is reported for logging once per interval", "[limits]") {
  AddressLimits limits(connections(1));
  REQUIRE(limits.try_acquire(key("127.0.0.2"), start).verdict == Verdict::granted);
  auto refused = limits.try_acquire(key("127.0.0.2"), start);
  CHECK(refused.log);
  CHECK(refused.refused_unlogged == 0);
  for (int i = 0; i < 4; ++i) CHECK_FALSE(limits.try_acquire(key("127.0.0.2"), start + 59s).log);
  refused = limits.try_acquire(key("127.0.0.2"), start + 60s);
  CHECK(refused.log);
  CHECK(refused.refused_unlogged == 4);
  CHECK_FALSE(limits.try_acquire(key("127.0.0.2"), start + 61s).log);
}

TEST_CASE("a full table lets new addresses through uncounted and reuses idle entries", "[limits]") {
  AddressLimitSettings settings = connections(1);
  settings.capacity = 1024;
  AddressLimits limits(settings);
  std::vector<AddressLimits::Admission> held;
  AddressLimits::Admission untracked;
  std::string untracked_ip;
  for (int i = 0; i < 4096 && untracked_ip.empty(); ++i) {
    const std::string ip = "10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256);
    const auto admission = limits.try_acquire(key(ip), start);
    if (admission.verdict == Verdict::untracked) {
      untracked = admission;
      untracked_ip = ip;
    } else {
      REQUIRE(admission.verdict == Verdict::granted);
      held.push_back(admission);
    }
  }
  REQUIRE_FALSE(untracked_ip.empty());  // some window filled up before 4096 addresses
  CHECK(held.size() <= 1024);
  CHECK(untracked.entry == -1);
  limits.release(untracked);  // nothing was counted: nothing changes
  CHECK(limits.stats().untracked >= 1);
  CHECK(limits.open_connections(key(untracked_ip)) == 0);
  // Every address still has its limit; once they all close, the table takes the new one.
  CHECK(limits.try_acquire(key("10.0.0.0"), start).verdict == Verdict::too_many_connections);
  for (const auto& admission : held) limits.release(admission);
  const auto later = limits.try_acquire(key(untracked_ip), start);
  CHECK(later.verdict == Verdict::granted);
  CHECK(limits.open_connections(key(untracked_ip)) == 1);
}

TEST_CASE("rate-only entries are reused once their rate has refilled", "[limits]") {
  AddressLimitSettings settings = rate(1, 1);
  settings.capacity = 1024;
  AddressLimits limits(settings);
  int untracked = 0;
  for (int i = 0; i < 4096; ++i) {
    const std::string ip = "10.1." + std::to_string(i / 256) + "." + std::to_string(i % 256);
    untracked += limits.try_acquire(key(ip), start).verdict == Verdict::untracked;
  }
  CHECK(untracked > 0);  // within a second every entry still holds rate debt
  // Two seconds later the old entries have refilled: new addresses find room (a few hundred, far
  // from filling any 16-entry window).
  for (int i = 0; i < 256; ++i)
    CHECK(limits.try_acquire(key("10.2.0." + std::to_string(i)), start + 2s).verdict == Verdict::granted);
}

TEST_CASE("counts are one total across processes and a copy in a forked child releases nothing", "[limits]") {
  AddressLimits limits(connections(3));
  const auto parents = limits.try_acquire(key("127.0.0.2"));
  REQUIRE(parents.verdict == Verdict::granted);
  Pipe ready, go;
  // Two children take one each: the address is at its limit across the three processes.
  std::vector<pid_t> children;
  for (int i = 0; i < 2; ++i) {
    children.push_back(spawn([&] {
      limits.release(parents);  // the parent's admission, copied by fork: not this process's to give back
      const auto mine = limits.try_acquire(key("127.0.0.2"));
      ready.put(mine.verdict == Verdict::granted ? 'g' : 'r');
      go.take();
      limits.release(mine);
      return 0;
    }));
  }
  CHECK(ready.take() == 'g');
  CHECK(ready.take() == 'g');
  CHECK(limits.open_connections(key("127.0.0.2")) == 3);
  CHECK(limits.try_acquire(key("127.0.0.2")).verdict == Verdict::too_many_connections);
  go.put();
  go.put();
  for (const pid_t child : children) CHECK(wait_for(child) == 0);
  for (const pid_t child : children) CHECK(limits.reclaim(child) == 0);  // they released before exiting
  CHECK(limits.open_connections(key("127.0.0.2")) == 1);
  limits.release(parents);
  CHECK(limits.open_connections(key("127.0.0.2")) == 0);
}

TEST_CASE("a child killed holding connections has them given back by the parent's reclaim", "[limits]") {
  AddressLimits limits(connections(100));
  Pipe ready;
  auto take = [&](int count) {
    return spawn([&, count] {
      for (int i = 0; i < count; ++i) {
        if (limits.try_acquire(key("127.0.0.2")).verdict != Verdict::granted) return 1;
        if (limits.try_acquire(key("2001:db8::" + std::to_string(i + 1))).verdict != Verdict::granted) return 1;
      }
      ready.put();
      ::pause();  // holds them until killed
      return 0;
    });
  };
  const pid_t first = take(5), second = take(7), third = take(2);
  for (int i = 0; i < 3; ++i) ready.take();
  CHECK(limits.open_connections(key("127.0.0.2")) == 14);
  CHECK(limits.open_connections(key("2001:db8::1")) == 14);

  REQUIRE(::kill(second, SIGKILL) == 0);
  CHECK(WTERMSIG(wait_for(second)) == SIGKILL);
  CHECK(limits.reclaim(second) == 14);  // 7 of each key
  CHECK(limits.open_connections(key("127.0.0.2")) == 7);
  CHECK(limits.reclaim(second) == 0);   // once only

  for (const pid_t child : {first, third}) {
    ::kill(child, SIGKILL);
    wait_for(child);
    limits.reclaim(child);
  }
  CHECK(limits.open_connections(key("127.0.0.2")) == 0);
  CHECK(limits.open_connections(key("2001:db8::1")) == 0);
  CHECK(limits.stats().reclaimed == 28);
  // The slots are free again: new children can count.
  const pid_t again = take(1);
  ready.take();
  CHECK(limits.open_connections(key("127.0.0.2")) == 1);
  ::kill(again, SIGKILL);
  wait_for(again);
  CHECK(limits.reclaim(again) == 2);
}

TEST_CASE("processes that come and go share out an address's owner cells", "[limits]") {
  AddressLimitSettings settings = connections(2);  // two cells per address
  settings.process_slots = 16;
  AddressLimits limits(settings);
  const auto parents = limits.try_acquire(key("127.0.0.2"));
  REQUIRE(parents.verdict == Verdict::granted);
  // Eight children one after another, each in a slot of its own (none reclaimed yet): each finds
  // the cell a previous one left at count 0, so each is counted, never let through uncounted.
  std::vector<pid_t> children;
  for (int i = 0; i < 8; ++i) {
    children.push_back(spawn([&] {
      const auto mine = limits.try_acquire(key("127.0.0.2"));
      const bool counted = mine.verdict == Verdict::granted && mine.open == 2 && mine.entry >= 0;
      const bool full = limits.try_acquire(key("127.0.0.2")).verdict == Verdict::too_many_connections;
      limits.release(mine);
      return counted && full ? 0 : 1;
    }));
    CHECK(wait_for(children.back()) == 0);
  }
  CHECK(limits.stats().untracked == 0);
  for (const pid_t child : children) CHECK(limits.reclaim(child) == 0);
  CHECK(limits.open_connections(key("127.0.0.2")) == 1);
  limits.release(parents);
  limits.release(parents);  // released twice: the second finds this process holding none
  CHECK(limits.open_connections(key("127.0.0.2")) == 0);
}

namespace {
bool stop_inside_lock = false;  // set in the child only
const Pipe* inside_lock = nullptr;
}  // namespace

TEST_CASE("a child killed inside a critical section leaves no lock held and no count wrong", "[limits]") {
  Pipe inside;
  inside_lock = &inside;
  AddressLimitSettings settings = connections(10);
  settings.while_locked_for_test = [] {
    if (!stop_inside_lock) return;
    inside_lock->put();
    ::pause();  // killed here: its cell written, the entry's open count not yet
  };
  AddressLimits limits(std::move(settings));
  const auto parents = limits.try_acquire(key("127.0.0.2"));
  REQUIRE(parents.verdict == Verdict::granted);
  const pid_t child = spawn([&] {
    stop_inside_lock = true;
    limits.try_acquire(key("127.0.0.2"));
    return 1;
  });
  REQUIRE(inside.take() == 'x');
  ::kill(child, SIGKILL);
  wait_for(child);

  // The lock the child died holding is taken over and the half-done change repaired: the child's
  // cell counts (1), the parent's too (1), and this grant makes 3.
  const auto next = limits.try_acquire(key("127.0.0.2"));
  CHECK(next.verdict == Verdict::granted);
  CHECK(next.open == 3);
  CHECK(limits.stats().repaired == 1);
  CHECK(limits.reclaim(child) == 1);
  CHECK(limits.open_connections(key("127.0.0.2")) == 2);
  limits.release(next);
  limits.release(parents);
  CHECK(limits.open_connections(key("127.0.0.2")) == 0);
}

TEST_CASE("processes beyond the slots are let through uncounted", "[limits]") {
  AddressLimitSettings settings = connections(1);
  settings.process_slots = 1;
  AddressLimits limits(settings);
  REQUIRE(limits.try_acquire(key("127.0.0.2")).verdict == Verdict::granted);  // the parent's slot
  const pid_t child = spawn([&] { return limits.try_acquire(key("127.0.0.2")).verdict == Verdict::untracked ? 0 : 1; });
  CHECK(wait_for(child) == 0);
  CHECK(limits.stats().untracked == 1);
}

TEST_CASE("the log throttle allows one line per key per interval and counts the rest", "[limits]") {
  LogThrottle throttle(60s, 2);
  std::uint64_t suppressed = 99;
  CHECK(throttle.allow("a", start, &suppressed));
  CHECK(suppressed == 0);
  CHECK_FALSE(throttle.allow("a", start + 30s));
  CHECK_FALSE(throttle.allow("a", start + 59s));
  CHECK(throttle.allow("b", start + 1s));
  CHECK(throttle.allow("a", start + 60s, &suppressed));
  CHECK(suppressed == 2);
  // Bounded: a third key forgets the one logged longest ago ("b"), which may then log again.
  CHECK(throttle.allow("c", start + 61s));
  CHECK(throttle.allow("b", start + 62s));
  CHECK_FALSE(throttle.allow("c", start + 63s));
}
