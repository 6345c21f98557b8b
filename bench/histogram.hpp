#pragma once
// A latency histogram with fixed memory and no allocation per sample: log-linear buckets (64 per
// power of two, so every recorded value is known to within 1/64 = 1.6 %).

#include <array>
#include <bit>
#include <cstdint>

namespace bench {

class Histogram {
 public:
  static constexpr int sub_bits = 6;                    // 64 buckets per power of two
  static constexpr int sub_buckets = 1 << sub_bits;
  static constexpr int powers = 64 - sub_bits + 1;

  /// Records one value (nanoseconds, or any unit).
  void record(std::uint64_t value) {
    ++counts_[index_of(value)];
    ++total_;
    if (value > max_) max_ = value;
  }
  /// Number of values recorded.
  std::uint64_t count() const { return total_; }
  /// Largest value recorded.
  std::uint64_t max() const { return max_; }
  /// The value below which `fraction` (0..1) of the samples fall: the upper edge of the bucket
  /// holding the sample of that rank, capped at max(). 0 when empty.
  std::uint64_t percentile(double fraction) const {
    if (total_ == 0) return 0;
    std::uint64_t rank = static_cast<std::uint64_t>(fraction * static_cast<double>(total_) + 0.5);
    if (rank < 1) rank = 1;
    if (rank > total_) rank = total_;
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        const std::uint64_t upper = upper_edge(i);
        return upper < max_ ? upper : max_;
      }
    }
    return max_;
  }
  /// Adds another histogram's samples.
  void merge(const Histogram& other) {
    for (std::size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
    if (other.max_ > max_) max_ = other.max_;
  }

  /// The bucket of a value: exact below 64, then 64 buckets per power of two.
  static std::size_t index_of(std::uint64_t value) {
    if (value < sub_buckets) return static_cast<std::size_t>(value);
    const int power = 63 - std::countl_zero(value);   // value in [2^power, 2^(power+1))
    const int shift = power - sub_bits;
    const std::uint64_t sub = (value >> shift) - sub_buckets;  // 0..63
    return static_cast<std::size_t>((shift + 1) * sub_buckets + sub);
  }
  /// The largest value that falls in bucket `index`.
  static std::uint64_t upper_edge(std::size_t index) {
    if (index < sub_buckets) return index;
    const int shift = static_cast<int>(index / sub_buckets) - 1;
    const std::uint64_t sub = index % sub_buckets + sub_buckets;
    return ((sub + 1) << shift) - 1;
  }

 private:
  std::array<std::uint64_t, powers * sub_buckets> counts_{};
  std::uint64_t total_ = 0;
  std::uint64_t max_ = 0;
};

}  // namespace bench
