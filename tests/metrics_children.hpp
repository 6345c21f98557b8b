#pragma once
// Real child processes counting in their own metrics slots, for the metrics tests and
// bench/metrics_bench: each runs a body in its slot, tells the parent it has, then stays until it
// is killed (or exits at once). The parent reaps them and folds their slots, as a Supervisor does.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <stdexcept>
#include <vector>

#include "metrics_store.hpp"

namespace metrics_test {

class SlotChildren {
 public:
  explicit SlotChildren(netserver::MetricsStore& store) : store_(store) {}
  ~SlotChildren() {
    while (!alive_.empty()) end(alive_.back());
  }
  SlotChildren(const SlotChildren&) = delete;
  SlotChildren& operator=(const SlotChildren&) = delete;

  /// Forks a child that binds a fresh slot (claimed with `inherit_gauges`) and runs `body`;
  /// returns its pid once the body has run. A child that does not `stay` exits then.
  pid_t spawn(const std::function<void()>& body, bool stay = true, bool inherit_gauges = false) {
    int ready[2];
    if (::pipe(ready) != 0) throw std::runtime_error("pipe() for a slot child");
    const netserver::MetricsStore::Slot slot = store_.claim(inherit_gauges);
    const pid_t pid = ::fork();
    if (pid == 0) {
      store_.bind_child(slot);
      body();
      (void)!::write(ready[1], "r", 1);
      if (stay) ::pause();
      ::_exit(0);
    }
    store_.assign(slot, pid);
    ::close(ready[1]);
    char byte;
    const bool ran = ::read(ready[0], &byte, 1) == 1;
    ::close(ready[0]);
    if (!ran) throw std::runtime_error("a slot child died before its body ran");
    alive_.push_back(pid);
    return pid;
  }

  /// Sends `signal` (0: none, the child exits by itself), reaps the child and folds its slot in
  /// `reaper` (by default the store it was spawned with; after a restart, the new image's);
  /// returns what child_exited() said.
  bool end(pid_t pid, int signal = SIGKILL, netserver::MetricsStore* reaper = nullptr) {
    if (signal) ::kill(pid, signal);
    ::waitpid(pid, nullptr, 0);
    alive_.erase(std::remove(alive_.begin(), alive_.end(), pid), alive_.end());
    return (reaper ? *reaper : store_).child_exited(pid);
  }

  const std::vector<pid_t>& alive() const { return alive_; }

 private:
  netserver::MetricsStore& store_;
  std::vector<pid_t> alive_;
};

}  // namespace metrics_test
