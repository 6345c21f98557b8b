#pragma once
// A token bucket: `rate` tokens a second, at most `burst` saved up. Taking more than is saved
// runs into debt, and the time the debt takes to pay back is how long the taker waits: so the
// average stays at `rate` even when each take is a whole read's worth of lines.

#include <algorithm>
#include <chrono>

namespace netserver {

class TokenBucket {
 public:
  using Clock = std::chrono::steady_clock;

  /// A full bucket at `now`.
  TokenBucket(double rate, double burst, Clock::time_point now) : rate_(rate), burst_(burst), tokens_(burst), at_(now) {}

  /// Takes `tokens` at `now`; returns how long until the bucket is out of debt again (zero when
  /// it is not in debt).
  Clock::duration take(double tokens, Clock::time_point now) {
    tokens_ = std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(now - at_).count()) - tokens;
    at_ = now;
    if (tokens_ >= 0) return Clock::duration::zero();
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(-tokens_ / rate_));
  }

 private:
  double rate_;
  double burst_;
  double tokens_;
  Clock::time_point at_;
};

}  // namespace netserver
