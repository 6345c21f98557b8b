#include "metrics_store.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <utility>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

#include "netserver/errors.hpp"
#include "netserver/log.hpp"
#include "restart.hpp"
#include "stall_watch.hpp"

namespace netserver {

namespace detail {
ActivityRecord unwatched_activity;
ActivityRecord* current_activity = &unwatched_activity;
}  // namespace detail

namespace {

// The names the tables are kept under across a restart (restart.hpp).
constexpr const char* own_table_name = "metrics";
std::string previous_table_name(std::size_t index) { return "metrics_previous_" + std::to_string(index); }

MetricsStore* current_store = nullptr;
std::vector<int> handed_over;  // take_handover()'s descriptors, until create() adopts them

std::size_t round_up(std::size_t value, std::size_t unit) { return (value + unit - 1) / unit * unit; }

char merge_code(GaugeMerge merge) { return merge == GaugeMerge::min ? 'n' : merge == GaugeMerge::max ? 'x' : 's'; }

bool parse_merge(char code, GaugeMerge& merge) {
  switch (code) {
    case 's': merge = GaugeMerge::sum; return true;
    case 'n': merge = GaugeMerge::min; return true;
    case 'x': merge = GaugeMerge::max; return true;
    default: return false;
  }
}

std::string key_of(const std::vector<MetricFamily>& families, const MetricSeries& series) {
  return families[series.family].name + series.labels;
}

void set_close_on_exec(int fd, bool on) { ::fcntl(fd, F_SETFD, on ? FD_CLOEXEC : 0); }

}  // namespace

// One mapped table: this image's own, or one a previous image handed over.
struct MetricsStore::Table {
  int fd = -1;
  std::byte* base = nullptr;
  std::size_t bytes = 0;
  std::uint32_t cells = 0;
  std::uint32_t slots = 0;
  std::uint32_t slot_bytes = 0;
  std::size_t retired_offset = 0;
  std::size_t slots_offset = 0;
  std::vector<pid_t> owners;           // the parent's view of SlotHeader::pid (0: free)
  std::vector<std::int32_t> to_current;  // an adopted table's cell -> the store's cell (-1: none)
  std::vector<MetricFamily> families;  // an adopted table's directory
  std::vector<MetricSeries> series;

  Table() = default;
  Table(const Table&) = delete;
  Table& operator=(const Table&) = delete;
  ~Table() {
    if (base) ::munmap(base, bytes);
    if (fd >= 0) ::close(fd);
  }

  SlotHeader& slot(int index) const {
    return *reinterpret_cast<SlotHeader*>(base + slots_offset + static_cast<std::size_t>(index) * slot_bytes);
  }
  std::atomic<std::int64_t>* cells_of(int index) const {
    return reinterpret_cast<std::atomic<std::int64_t>*>(reinterpret_cast<std::byte*>(&slot(index)) +
                                                        sizeof(SlotHeader));
  }
  std::atomic<std::int64_t>* retired() const {
    return reinterpret_cast<std::atomic<std::int64_t>*>(base + retired_offset);
  }
  int slot_of(pid_t pid) const {
    for (std::size_t i = 0; i < owners.size(); ++i)
      if (owners[i] == pid && pid != 0) return static_cast<int>(i);
    return -1;
  }
  bool has_live_slots() const {
    return std::any_of(owners.begin(), owners.end(), [](pid_t pid) { return pid != 0; });
  }
};

std::string directory_text(const std::vector<MetricFamily>& families, const std::vector<MetricSeries>& series) {
  std::string text;
  for (const MetricFamily& family : families) {
    std::string labels;
    for (const std::string& name : family.label_names) labels += (labels.empty() ? "" : ",") + name;
    text += fmt::format("F {} {} {} {} {}\n", family.type == MetricType::counter ? 'c' : 'g', merge_code(family.merge),
                        family.name, labels.empty() ? "-" : labels, family.help);  // one line: registration says so
  }
  for (const MetricSeries& one : series) text += fmt::format("S {} {}\n", one.family, one.labels);
  return text;
}

namespace {

bool parse_family_line(std::string_view line, MetricFamily& family, std::string& problem) {
  std::istringstream in{std::string(line)};
  std::string tag, type, merge, name, labels;
  in >> tag >> type >> merge >> name >> labels;
  std::string help;
  std::getline(in >> std::ws, help);
  if (type != "c" && type != "g") return problem = "bad family type", false;
  family.type = type == "c" ? MetricType::counter : MetricType::gauge;
  if (merge.size() != 1 || !parse_merge(merge[0], family.merge)) return problem = "bad gauge merge", false;
  if (!is_metric_name(name)) return problem = "bad metric name", false;
  family.name = name;
  std::istringstream names(labels == "-" ? "" : labels);
  for (std::string label; std::getline(names, label, ',');) {
    if (!is_label_name(label)) return problem = "bad label name", false;
    family.label_names.push_back(label);
  }
  family.help = help;
  return true;
}

}  // namespace

bool parse_directory(std::string_view text, std::vector<MetricFamily>& families, std::vector<MetricSeries>& series,
                     std::string& problem) {
  families.clear();
  series.clear();
  while (!text.empty()) {
    const std::size_t end = text.find('\n');
    if (end == std::string_view::npos) return problem = "directory does not end with a newline", false;
    const std::string_view line = text.substr(0, end);
    text.remove_prefix(end + 1);
    if (line.starts_with("F ") && series.empty()) {
      MetricFamily family;
      if (!parse_family_line(line, family, problem)) return false;
      families.push_back(std::move(family));
    } else if (line.starts_with("S ")) {
      const std::string_view rest = line.substr(2);
      const std::size_t space = rest.find(' ');
      if (space == std::string_view::npos) return problem = "bad series line", false;
      char* parsed_end = nullptr;
      const std::string number(rest.substr(0, space));
      const unsigned long family = std::strtoul(number.c_str(), &parsed_end, 10);
      if (number.empty() || *parsed_end != '\0' || family >= families.size()) return problem = "bad series family", false;
      const std::string_view labels = rest.substr(space + 1);
      if (!labels.empty() && (!labels.starts_with('{') || !labels.ends_with('}')))
        return problem = "bad series labels", false;
      series.push_back({static_cast<std::uint32_t>(family), std::string(labels)});
    } else {
      return problem = fmt::format("unexpected line \"{}\"", line.substr(0, 40)), false;
    }
  }
  return true;
}

namespace {

// Reads the header a previous image wrote; "" when its fields fit a mapping of `bytes`.
std::string check_header(const StoreHeader& header, std::size_t bytes) {
  if (std::memcmp(header.magic, store_magic, sizeof store_magic) != 0) return "not a metrics table";
  if (header.layout_version != store_layout_version)
    return fmt::format("layout version {}, this program reads {}", header.layout_version, store_layout_version);
  const auto fits = [&](std::uint64_t offset, std::uint64_t length) { return offset <= bytes && length <= bytes - offset; };
  const std::uint64_t row = sizeof(SlotHeader) + std::uint64_t{header.cells} * 8;
  const bool sane = header.total_bytes == bytes && header.cells >= 1 && header.cells <= MetricsSchema::max_cells &&
                    header.slot_bytes % 64 == 0 && header.slot_bytes >= row && header.slots >= 1 &&
                    header.slots <= (1u << 20) && header.retired_offset % 64 == 0 && header.slots_offset % 64 == 0 &&
                    fits(header.directory_offset, header.directory_bytes) &&
                    fits(header.retired_offset, std::uint64_t{header.cells} * 8) &&
                    fits(header.slots_offset, std::uint64_t{header.slots} * header.slot_bytes);
  return sane ? "" : "inconsistent header";
}

}  // namespace

// Maps a table another image made (taking `fd`); nullptr, logged, when it cannot be read.
std::unique_ptr<MetricsStore::Table> MetricsStore::map_previous(int fd) {
  auto table = std::make_unique<MetricsStore::Table>();
  table->fd = fd;
  set_close_on_exec(fd, true);
  const auto reject = [fd](const std::string& why) {
    log::warning("metrics: the previous image's table (descriptor {}) cannot be read: {}; its counts start over", fd,
                 why);
    return nullptr;
  };
  struct stat info {};
  if (::fstat(fd, &info) != 0) return reject(system_error_text("fstat()", errno));
  const auto bytes = static_cast<std::size_t>(info.st_size);
  StoreHeader header{};
  if (bytes < sizeof header || ::pread(fd, &header, sizeof header, 0) != static_cast<ssize_t>(sizeof header))
    return reject("too small");
  if (const std::string problem = check_header(header, bytes); !problem.empty()) return reject(problem);
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return reject(system_error_text("mmap()", errno));
  table->base = static_cast<std::byte*>(base);
  table->bytes = bytes;
  const std::string_view directory(reinterpret_cast<const char*>(table->base + header.directory_offset),
                                   header.directory_bytes);
  std::string problem;
  if (!parse_directory(directory, table->families, table->series, problem)) return reject("directory: " + problem);
  if (table->series.size() + 1 != header.cells) return reject("its directory and its cells disagree");
  table->cells = header.cells;
  table->slots = header.slots;
  table->slot_bytes = header.slot_bytes;
  table->retired_offset = header.retired_offset;
  table->slots_offset = header.slots_offset;
  table->owners.resize(header.slots);
  for (std::uint32_t i = 0; i < header.slots; ++i) table->owners[i] = table->slot(static_cast<int>(i)).pid.load();
  return table;
}

namespace {


}  // namespace

std::unique_ptr<MetricsStore> MetricsStore::create(MetricsSchema& schema, std::size_t child_slots,
                                                   const std::vector<pid_t>& inherited_children) {
  schema.freeze();
  std::unique_ptr<MetricsStore> store(new MetricsStore());
  store->families_ = schema.families();
  store->series_ = schema.series();
  std::vector<std::unique_ptr<Table>> previous;
  for (int fd : std::exchange(handed_over, {}))
    if (auto table = map_previous(fd)) {
      store->carry_series_of(*table);
      previous.push_back(std::move(table));
    }
  store->lay_out(child_slots);
  store->bind_self(schema);
  for (auto& table : previous) store->adopt(std::move(table), inherited_children);
  current_store = store.get();
  store->keep_descriptors();
  return store;
}

void MetricsStore::take_handover() {
  if (const int fd = take_inherited_descriptor(own_table_name); fd >= 0) handed_over.push_back(fd);
  for (std::size_t i = 0;; ++i) {
    const int fd = take_inherited_descriptor(previous_table_name(i));
    if (fd < 0) break;
    handed_over.push_back(fd);
  }
}

std::vector<std::pair<std::string, int>> MetricsStore::kept_descriptors() const {
  std::vector<std::pair<std::string, int>> kept;
  if (own_->fd >= 0) kept.emplace_back(own_table_name, own_->fd);
  for (std::size_t i = 0; i < previous_.size(); ++i)
    if (previous_[i]->fd >= 0) kept.emplace_back(previous_table_name(i), previous_[i]->fd);
  return kept;
}

void MetricsStore::forget_kept_descriptors() {
  for (std::size_t i = 0; i < kept_previous_; ++i) keep_across_restart(previous_table_name(i), -1);
  keep_across_restart(own_table_name, -1);
  kept_previous_ = 0;
}

// The tables a restart must hand on: this one, and those of earlier images with live slots.
void MetricsStore::keep_descriptors() {
  forget_kept_descriptors();
  for (const auto& [name, fd] : kept_descriptors()) {
    keep_across_restart(name, fd);
    if (name != own_table_name) ++kept_previous_;
  }
}

// A process that outlives its store (a test) writes its private rows again; its stall watcher,
// which writes the slot, stops first.
MetricsStore::~MetricsStore() {
  if (current_store != this) return;
  StallWatcher::stop();
  current_store = nullptr;
  forget_kept_descriptors();  // they close with the tables
  detail::metric_cells = detail::preliminary_cells();
  detail::current_activity = &detail::unwatched_activity;
}

MetricsStore* MetricsStore::current() { return current_store; }

// Counter series of a previous image that this schema does not have keep counting (as retired
// totals) under their old name, so that no counter goes backwards because a listener or an
// application metric went away. A family whose type or labels changed starts over instead.
void MetricsStore::carry_series_of(const Table& previous) {
  std::unordered_set<std::string> known;
  for (const MetricSeries& one : series_) known.insert(key_of(families_, one));
  for (const MetricSeries& old : previous.series) {
    const MetricFamily& old_family = previous.families[old.family];
    if (old_family.type != MetricType::counter || !known.insert(key_of(previous.families, old)).second) continue;
    auto family = std::find_if(families_.begin(), families_.end(),
                               [&](const MetricFamily& f) { return f.name == old_family.name; });
    if (family == families_.end()) {
      families_.push_back(old_family);
      family = families_.end() - 1;
    } else if (family->type != old_family.type || family->label_names != old_family.label_names) {
      log::warning("metrics: {} changed its type or labels in this image; the previous image's {}{} starts over",
                   old_family.name, old_family.name, old.labels);
      continue;
    }
    series_.push_back({static_cast<std::uint32_t>(family - families_.begin()), old.labels});
  }
}

void MetricsStore::lay_out(std::size_t child_slots) {
  if (series_.size() + 1 > MetricsSchema::max_cells) throw Error("metrics: too many series");
  const std::string directory = directory_text(families_, series_);
  const auto cells = static_cast<std::uint32_t>(series_.size() + 1);
  const auto slots = static_cast<std::uint32_t>(child_slots + 1);
  const std::size_t slot_bytes = round_up(sizeof(SlotHeader) + std::size_t{cells} * 8, 64);
  const std::size_t directory_offset = round_up(sizeof(StoreHeader), 64);
  const std::size_t retired_offset = round_up(directory_offset + directory.size(), 64);
  const std::size_t slots_offset = round_up(retired_offset + std::size_t{cells} * 8, 64);
  const std::size_t total = round_up(slots_offset + slots * slot_bytes, static_cast<std::size_t>(::getpagesize()));

  auto table = std::make_unique<Table>();
  table->fd = ::memfd_create("netserver-metrics", MFD_CLOEXEC);
  if (table->fd < 0) throw Error(system_error_text("memfd_create() for the metrics table", errno));
  if (::ftruncate(table->fd, static_cast<off_t>(total)) != 0)
    throw Error(system_error_text(fmt::format("ftruncate() of the metrics table to {} bytes", total), errno));
  void* base = ::mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, table->fd, 0);
  if (base == MAP_FAILED) throw Error(system_error_text("mmap() of the metrics table", errno));
  table->base = static_cast<std::byte*>(base);
  table->bytes = total;
  table->cells = cells;
  table->slots = slots;
  table->slot_bytes = static_cast<std::uint32_t>(slot_bytes);
  table->retired_offset = retired_offset;
  table->slots_offset = slots_offset;
  table->owners.assign(slots, 0);

  StoreHeader header{};
  std::memcpy(header.magic, store_magic, sizeof store_magic);
  header.layout_version = store_layout_version;
  header.cells = cells;
  header.slots = slots;
  header.slot_bytes = table->slot_bytes;
  header.directory_offset = directory_offset;
  header.directory_bytes = directory.size();
  header.retired_offset = retired_offset;
  header.slots_offset = slots_offset;
  header.total_bytes = total;
  std::memcpy(table->base, &header, sizeof header);
  std::memcpy(table->base + directory_offset, directory.data(), directory.size());
  for (std::uint32_t i = 0; i < slots; ++i) new (&table->slot(static_cast<int>(i))) SlotHeader();
  for (std::uint32_t i = slots; i-- > 1;) free_slots_.push_back(static_cast<int>(i));
  kinds_.assign(cells, CellKind::sink);
  for (std::uint32_t cell = 1; cell < cells; ++cell) {
    const MetricFamily& family = families_[series_[cell - 1].family];
    kinds_[cell] = family.type == MetricType::counter ? CellKind::counter
                   : family.merge == GaugeMerge::min  ? CellKind::gauge_min
                   : family.merge == GaugeMerge::max  ? CellKind::gauge_max
                                                      : CellKind::gauge_sum;
  }
  own_ = std::move(table);
}

std::int64_t MetricsStore::initial_value(std::uint32_t cell, bool inherit_gauges) const {
  switch (kinds_[cell]) {
    case CellKind::sink:
    case CellKind::counter: return 0;
    case CellKind::gauge_sum: return inherit_gauges ? detail::metric_cells[cell].load(std::memory_order_relaxed) : 0;
    case CellKind::gauge_min:
    case CellKind::gauge_max:
      return inherit_gauges ? detail::metric_cells[cell].load(std::memory_order_relaxed) : unset_gauge;
  }
  return 0;
}

// Slot 0 is this process's: what it counted before the store existed moves in.
void MetricsStore::bind_self(const MetricsSchema& schema) {
  SlotHeader& mine = own_->slot(0);
  mine.pid.store(::getpid());
  own_->owners[0] = ::getpid();
  std::atomic<std::int64_t>* row = own_->cells_of(0);
  const bool counted_before = &schema == &MetricsSchema::global();  // the preliminary row is the global schema's
  for (std::uint32_t cell = 0; cell < own_->cells; ++cell) {
    const bool registered = cell < schema.cells();
    const std::int64_t value = registered && counted_before ? detail::preliminary_cells()[cell].load()
                                                            : initial_value(cell, false);
    row[cell].store(value, std::memory_order_relaxed);
  }
  mine.activity.heartbeat_ns.store(detail::monotonic_ns());
  detail::metric_cells = row;
  detail::current_activity = &mine.activity;
}

void MetricsStore::adopt(std::unique_ptr<Table> previous, const std::vector<pid_t>& inherited_children) {
  restarted_ = true;
  std::unordered_map<std::string, std::uint32_t> cell_by_key;
  for (std::size_t i = 0; i < series_.size(); ++i) cell_by_key[key_of(families_, series_[i])] = MetricsSchema::cell_of(i);
  previous->to_current.assign(previous->cells, -1);
  for (std::size_t i = 0; i < previous->series.size(); ++i) {
    const auto found = cell_by_key.find(key_of(previous->families, previous->series[i]));
    const bool was_counter = previous->families[previous->series[i].family].type == MetricType::counter;
    if (found != cell_by_key.end() && was_counter == (kinds_[found->second] == CellKind::counter))
      previous->to_current[i + 1] = static_cast<std::int32_t>(found->second);
  }
  std::atomic<std::int64_t>* retired = own_->retired();
  for (std::uint32_t cell = 1; cell < previous->cells; ++cell) {
    const std::int32_t to = previous->to_current[cell];
    if (to > 0 && kinds_[to] == CellKind::counter) retired[to].store(retired[to].load() + previous->retired()[cell].load());
    previous->retired()[cell].store(0);  // taken over: a later image must not count it again
  }
  for (std::size_t i = 0; i < previous->owners.size(); ++i) {
    const pid_t pid = previous->owners[i];
    const bool waited_for =
        std::find(inherited_children.begin(), inherited_children.end(), pid) != inherited_children.end();
    if (pid != 0 && (pid == ::getpid() || !waited_for)) fold(*previous, static_cast<int>(i));
  }
  if (previous->has_live_slots()) previous_.push_back(std::move(previous));
}

// The slot's counters join the retired totals of this store; the slot is free again.
void MetricsStore::fold(Table& table, int slot) {
  const bool own = &table == own_.get();
  const std::atomic<std::int64_t>* row = table.cells_of(slot);
  std::atomic<std::int64_t>* retired = own_->retired();
  for (std::uint32_t cell = 1; cell < table.cells; ++cell) {
    const std::int32_t to = own ? static_cast<std::int32_t>(cell) : table.to_current[cell];
    if (to > 0 && kinds_[to] == CellKind::counter)
      retired[to].store(retired[to].load() + row[cell].load(std::memory_order_relaxed));
  }
  table.slot(slot).pid.store(0);
  table.owners[static_cast<std::size_t>(slot)] = 0;
  if (own) free_slots_.push_back(slot);
}

MetricsStore::Slot MetricsStore::claim(bool inherit_gauges) {
  if (free_slots_.empty()) {
    if (!full_logged_)
      log::warning("metrics: all {} slots for child processes are in use: a child started now counts nowhere "
                   "(its counts are missing from /metrics)",
                   own_->slots - 1);
    full_logged_ = true;
    return {};
  }
  const int index = free_slots_.back();
  free_slots_.pop_back();
  SlotHeader& slot = own_->slot(index);
  new (&slot.activity) ActivityRecord();
  slot.activity.heartbeat_ns.store(detail::monotonic_ns());  // a child that never starts its loop is stuck too
  std::atomic<std::int64_t>* row = own_->cells_of(index);
  for (std::uint32_t cell = 0; cell < own_->cells; ++cell)
    row[cell].store(initial_value(cell, inherit_gauges), std::memory_order_relaxed);
  slot.pid.store(-1);
  own_->owners[static_cast<std::size_t>(index)] = -1;
  return {index};
}

void MetricsStore::assign(Slot slot, pid_t pid) {
  if (!slot) return;
  own_->slot(slot.index).pid.store(pid);
  own_->owners[static_cast<std::size_t>(slot.index)] = pid;
}

void MetricsStore::cancel(Slot slot) {
  if (!slot) return;
  own_->slot(slot.index).pid.store(0);
  own_->owners[static_cast<std::size_t>(slot.index)] = 0;
  free_slots_.push_back(slot.index);
}

bool MetricsStore::child_exited(pid_t pid) {
  if (pid <= 0) return false;
  if (const int slot = own_->slot_of(pid); slot > 0) {
    fold(*own_, slot);
    return true;
  }
  for (auto table = previous_.begin(); table != previous_.end(); ++table) {
    const int slot = (*table)->slot_of(pid);
    if (slot < 0) continue;
    fold(**table, slot);
    if (!(*table)->has_live_slots()) {  // every process of that image is gone
      previous_.erase(table);
      keep_descriptors();
    }
    return true;
  }
  return false;
}

void MetricsStore::bind_child(Slot slot) {
  static std::atomic<std::int64_t> private_row[MetricsSchema::max_cells];
  static ActivityRecord private_activity;
  if (slot) {
    own_->slot(slot.index).pid.store(::getpid());
    detail::metric_cells = own_->cells_of(slot.index);
    detail::current_activity = &own_->slot(slot.index).activity;
  } else {
    detail::metric_cells = private_row;
    detail::current_activity = &private_activity;
  }
  for (const auto& [name, fd] : kept_descriptors()) ::close(fd);  // a child never hands the tables on
  forget_kept_descriptors();
  own_->fd = -1;
  for (auto& table : previous_) table->fd = -1;
}

std::vector<std::int64_t> MetricsStore::totals() const {
  std::vector<std::int64_t> out(own_->cells, 0);
  std::vector<bool> seen(own_->cells, false);
  const auto merge = [&](std::int32_t cell, std::int64_t value) {
    switch (kinds_[cell]) {
      case CellKind::sink: return;
      case CellKind::counter:
      case CellKind::gauge_sum: out[cell] += value; return;
      case CellKind::gauge_min:
      case CellKind::gauge_max:
        if (value == unset_gauge) return;
        if (!seen[cell]) out[cell] = value;
        else out[cell] = kinds_[cell] == CellKind::gauge_min ? std::min(out[cell], value) : std::max(out[cell], value);
        seen[cell] = true;
    }
  };
  for (std::uint32_t cell = 1; cell < own_->cells; ++cell)
    if (kinds_[cell] == CellKind::counter) out[cell] = own_->retired()[cell].load();
  for (std::size_t slot = 0; slot < own_->owners.size(); ++slot) {
    if (own_->owners[slot] == 0) continue;
    const std::atomic<std::int64_t>* row = own_->cells_of(static_cast<int>(slot));
    for (std::uint32_t cell = 1; cell < own_->cells; ++cell)
      merge(static_cast<std::int32_t>(cell), row[cell].load(std::memory_order_relaxed));
  }
  for (const auto& table : previous_)
    for (std::size_t slot = 0; slot < table->owners.size(); ++slot) {
      if (table->owners[slot] == 0) continue;
      const std::atomic<std::int64_t>* row = table->cells_of(static_cast<int>(slot));
      for (std::uint32_t cell = 1; cell < table->cells; ++cell)
        if (table->to_current[cell] > 0) merge(table->to_current[cell], row[cell].load(std::memory_order_relaxed));
    }
  for (std::uint32_t cell = 1; cell < own_->cells; ++cell)
    if ((kinds_[cell] == CellKind::gauge_min || kinds_[cell] == CellKind::gauge_max) && !seen[cell])
      out[cell] = unset_gauge;
  return out;
}

std::optional<std::vector<std::int64_t>> MetricsStore::cells_of(pid_t pid) const {
  std::vector<std::int64_t> out(own_->cells, 0);
  if (const int slot = own_->slot_of(pid); slot >= 0) {
    const std::atomic<std::int64_t>* row = own_->cells_of(slot);
    for (std::uint32_t cell = 0; cell < own_->cells; ++cell) out[cell] = row[cell].load(std::memory_order_relaxed);
    return out;
  }
  for (const auto& table : previous_)
    if (const int slot = table->slot_of(pid); slot >= 0) {
      const std::atomic<std::int64_t>* row = table->cells_of(slot);
      for (std::uint32_t cell = 1; cell < table->cells; ++cell)
        if (table->to_current[cell] > 0) out[table->to_current[cell]] = row[cell].load(std::memory_order_relaxed);
      return out;
    }
  return std::nullopt;
}

const ActivityRecord* MetricsStore::activity_of(pid_t pid) const {
  if (const int slot = own_->slot_of(pid); slot >= 0) return &own_->slot(slot).activity;
  for (const auto& table : previous_)
    if (const int slot = table->slot_of(pid); slot >= 0) return &table->slot(slot).activity;
  return nullptr;
}

std::size_t MetricsStore::child_slots() const { return own_->slots - 1; }

}  // namespace netserver
