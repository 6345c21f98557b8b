// The metrics schema and the shared-memory store: registration rules, exact sums across real
// forked processes, what a dead process leaves, and the handover of a HUP (in one process: the
// table is adopted by a second store exactly as a new image adopts it after exec).

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>

#include <catch2/catch.hpp>

#include "metrics_children.hpp"
#include "metrics_engine.hpp"
#include "metrics_store.hpp"
#include "restart.hpp"

using namespace netserver;
using metrics_test::SlotChildren;

namespace {

std::int64_t total(const MetricsStore& store, std::string_view name, std::string_view labels = "") {
  const std::vector<std::int64_t> totals = store.totals();
  for (std::size_t i = 0; i < store.series().size(); ++i)
    if (store.families()[store.series()[i].family].name == name && store.series()[i].labels == labels)
      return totals[MetricsSchema::cell_of(i)];
  FAIL("no series " << name << labels);
  return 0;
}

// The environment a restart's exec leaves, read by the new image as the server reads it.
void pass_kept(const std::string& kept) {
  ::setenv("NETSERVER_KEPT_FDS", kept.c_str(), 1);
  Inheritance::take();
  MetricsStore::take_handover();
}

// What a restart does for the store: the tables the current store keeps reach the next "image"
// (here duplicated, since the old image lives on and keeps its own descriptors), which takes them.
void hand_over() {
  std::string kept;
  for (const auto& [name, fd] : MetricsStore::current()->kept_descriptors())
    kept += name + "=" + std::to_string(::fcntl(fd, F_DUPFD_CLOEXEC, 0)) + " ";
  pass_kept(kept);
}

}  // namespace

TEST_CASE("metric names and labels and help follow Prometheus and the toolkit's reservations", "[metrics]") {
  MetricsSchema schema;
  CHECK_THROWS_WITH(schema.counter("9lives_total", "h"), Catch::Contains("expected [a-zA-Z_:]"));
  CHECK_THROWS_WITH(schema.counter("requests", "h"), Catch::Contains("ends in _total"));
  CHECK_THROWS_WITH(schema.gauge("open_total", "h"), Catch::Contains("ends in _total"));
  CHECK_THROWS_WITH(schema.counter("netserver_x_total", "h"), Catch::Contains("the toolkit's"));
  CHECK_THROWS_WITH(schema.gauge("process_x", "h"), Catch::Contains("the toolkit's"));
  CHECK_NOTHROW(schema.counter("netserver_x_total", "h", {}, true));
  CHECK_THROWS_WITH(schema.counter("a_total", ""), Catch::Contains("help"));
  CHECK_THROWS_WITH(schema.counter("a_total", "two\nlines"), Catch::Contains("help"));
  CHECK_THROWS_WITH(schema.counter("b_total", "h", {{"__x", "v"}}), Catch::Contains("bad label name"));
  CHECK_THROWS_WITH(schema.counter("b_total", "h", {{"le", "v"}}), Catch::Contains("bad label name"));
  CHECK_THROWS_WITH(schema.counter("b_total", "h", {{"x", "1"}, {"x", "2"}}), Catch::Contains("given twice"));
  schema.counter("c_total", "h", {{"room", "a"}});
  CHECK_THROWS_WITH(schema.counter("c_total", "h", {{"room", "a"}}), Catch::Contains("registered twice"));
  CHECK_THROWS_WITH(schema.counter("c_total", "other help", {{"room", "b"}}), Catch::Contains("registered again"));
  CHECK_THROWS_WITH(schema.counter("c_total", "h", {{"hall", "b"}}), Catch::Contains("registered again"));
  CHECK_THROWS_WITH(schema.gauge("c_total", "h", {{"room", "b"}}), Catch::Contains("a gauge's does not"));
  CHECK_NOTHROW(schema.counter("c_total", "h", {{"room", "b"}}));
  schema.freeze();
  CHECK_THROWS_AS(schema.counter("late_total", "h"), std::logic_error);
}

TEST_CASE("label values are escaped: backslash and quote and newline", "[metrics]") {
  CHECK(format_labels({{"a", "x\\y\"z\nw"}, {"b", "plain"}}) == R"({a="x\\y\"z\nw",b="plain"})");
  CHECK(format_labels({}) == "");
  CHECK(escape_help("a\\b\nc") == "a\\\\b\\nc");
}

TEST_CASE("counts of every process add up exactly and a dead process keeps its counters but loses its gauges",
          "[metrics]") {
  MetricsSchema schema;
  const Counter events = schema.counter("events_total", "events");
  const Gauge open = schema.gauge("open", "open things");
  const Gauge up = schema.gauge("up", "all up", {}, GaugeMerge::min);
  const Gauge peak = schema.gauge("peak", "largest", {}, GaugeMerge::max);
  auto store = MetricsStore::create(schema, 4);
  SlotChildren children(*store);
  events.add(1);
  open.add(1);

  const pid_t finished = children.spawn([&] {
    events.add(10);
    open.add(5);
    up.set(0);
    peak.set(90);
  }, false);
  const pid_t killed = children.spawn([&] {
    events.add(100);
    open.add(7);
    up.set(0);
  });
  const pid_t alive = children.spawn([&] {
    events.add(1000);
    open.add(2);
    up.set(1);
    peak.set(3);
  });
  CHECK(total(*store, "events_total") == 1111);
  CHECK(total(*store, "open") == 15);
  CHECK(total(*store, "up") == 0);
  CHECK(total(*store, "peak") == 90);

  REQUIRE(children.end(finished, 0));
  REQUIRE(children.end(killed));
  CHECK(total(*store, "events_total") == 1111);  // nothing lost
  CHECK(total(*store, "open") == 3);             // the dead ones' gauges are gone
  CHECK(total(*store, "up") == 1);
  CHECK(total(*store, "peak") == 3);
  CHECK_FALSE(store->child_exited(finished));    // folded once only

  // A recycled slot starts clean.
  const pid_t next = children.spawn([&] { events.add(1); }, false);
  REQUIRE(children.end(next, 0));
  REQUIRE(children.end(alive));
  CHECK(total(*store, "events_total") == 1112);
  CHECK(total(*store, "open") == 1);
  CHECK(total(*store, "up") == unset_gauge);     // nobody sets it now
}

TEST_CASE("a child without a free slot counts nowhere and the rest stays exact", "[metrics]") {
  MetricsSchema schema;
  const Counter events = schema.counter("events_total", "events");
  auto store = MetricsStore::create(schema, 1);
  SlotChildren children(*store);
  const pid_t first = children.spawn([&] { events.add(1); });
  CHECK_FALSE(store->claim());
  const pid_t second = children.spawn([&] { events.add(50); }, false);
  CHECK(total(*store, "events_total") == 1);
  CHECK_FALSE(children.end(second, 0));
  REQUIRE(children.end(first));
  CHECK(total(*store, "events_total") == 1);
}

TEST_CASE("a copy that takes over this process's sessions starts with its gauges", "[metrics]") {
  MetricsSchema schema;
  const Gauge open = schema.gauge("open", "open sessions");
  auto store = MetricsStore::create(schema, 2);
  SlotChildren children(*store);
  open.add(4);
  children.spawn([&] { open.add(-1); }, true, true);
  open.set(0);  // the sessions went with the copy
  CHECK(total(*store, "open") == 3);
}

TEST_CASE("what a counter counted before the store existed moves into it", "[metrics]") {
  // Only the global schema has a row before its store; one process, one store of it per run.
  MetricsSchema& global = MetricsSchema::global();
  const Counter early = global.counter("early_total", "counted before the store");
  early.add(3);
  auto store = MetricsStore::create(global, 1);
  early.add(1);
  CHECK(total(*store, "early_total") == 4);
}

TEST_CASE("a restart hands the table over: totals carried and the old image's children folded when reaped",
          "[metrics]") {
  MetricsSchema before;
  const Counter kept = before.counter("kept_total", "a counter both images have", {{"listener", "a"}});
  const Counter dropped = before.counter("gone_total", "a counter the new image does not have");
  const Gauge open = before.gauge("open", "open sessions");
  auto old_image = MetricsStore::create(before, 4);
  SlotChildren children(*old_image);
  kept.add(5);
  dropped.add(2);
  open.add(1);
  REQUIRE(children.end(children.spawn([&] { kept.add(10); }, false), 0));
  const pid_t draining = children.spawn([&] { kept.add(100); open.add(3); });
  const pid_t orphan = children.spawn([&] { kept.add(1000); open.add(9); });

  MetricsSchema after;
  const Counter kept_again = after.counter("kept_total", "a counter both images have", {{"listener", "a"}});
  const Counter fresh = after.counter("fresh_total", "new in this image");
  after.gauge("open", "open sessions");
  hand_over();
  auto new_image = MetricsStore::create(after, 4, {draining});  // `orphan` is not waited for: folded now
  CHECK(new_image->restarted());
  CHECK(new_image->kept_descriptors().size() == 2);  // its own table, and the old one for `draining`
  CHECK(total(*new_image, "kept_total", R"({listener="a"})") == 1115);
  CHECK(total(*new_image, "gone_total") == 2);  // carried under its old name
  CHECK(total(*new_image, "fresh_total") == 0);
  CHECK(total(*new_image, "open") == 3);        // the draining child's; the old parent's and the orphan's went
  kept_again.add(1);
  fresh.add(1);
  CHECK(total(*new_image, "kept_total", R"({listener="a"})") == 1116);

  // The draining child of the old image still writes its slot in the old table; the new image
  // reaps it.
  CHECK(children.end(draining, SIGKILL, new_image.get()));
  CHECK(new_image->kept_descriptors().size() == 1);  // the old table has nobody left
  CHECK(total(*new_image, "kept_total", R"({listener="a"})") == 1116);
  CHECK(total(*new_image, "open") == 0);
  CHECK_FALSE(children.end(orphan, SIGKILL, new_image.get()));  // folded already

  // A second restart carries everything once more, counting nothing twice.
  MetricsSchema third;
  third.counter("kept_total", "a counter both images have", {{"listener", "a"}});
  hand_over();
  auto third_image = MetricsStore::create(third, 1);
  CHECK(total(*third_image, "kept_total", R"({listener="a"})") == 1116);
  CHECK(total(*third_image, "gone_total") == 2);
  CHECK(total(*third_image, "fresh_total") == 1);
}

TEST_CASE("a family whose labels changed at a restart starts over instead of mixing label sets", "[metrics]") {
  MetricsSchema before;
  const Counter hits = before.counter("hits_total", "hits", {{"listener", "a"}});
  auto old_image = MetricsStore::create(before, 1);
  hits.add(4);
  MetricsSchema after;
  after.counter("hits_total", "hits", {{"listener", "a"}, {"reason", "x"}});
  hand_over();
  auto new_image = MetricsStore::create(after, 1);
  CHECK(new_image->series().size() == 1);
  CHECK(total(*new_image, "hits_total", R"({listener="a",reason="x"})") == 0);
}

TEST_CASE("a table that is not one this program wrote is logged and left alone", "[metrics]") {
  const int fd = ::memfd_create("not-a-table", MFD_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, 4096) == 0);
  REQUIRE(::pwrite(fd, "garbage", 7, 0) == 7);
  pass_kept("metrics=" + std::to_string(fd));
  MetricsSchema schema;
  schema.counter("a_total", "a");
  auto store = MetricsStore::create(schema, 1);
  CHECK_FALSE(store->restarted());
  char target[256] = {};
  (void)!::readlink(("/proc/self/fd/" + std::to_string(fd)).c_str(), target, sizeof target - 1);
  CHECK(std::string(target).find("not-a-table") == std::string::npos);  // closed (the number may be reused)
}

TEST_CASE("the directory of a table reads back and malformed ones are refused", "[metrics]") {
  MetricsSchema schema;
  schema.counter("a_total", "help with \\ backslash", {{"l", "v \"q\"\nn"}});
  schema.gauge("g", "a gauge", {}, GaugeMerge::max);
  std::vector<MetricFamily> families;
  std::vector<MetricSeries> series;
  std::string problem;
  REQUIRE(parse_directory(directory_text(schema.families(), schema.series()), families, series, problem));
  REQUIRE(families.size() == 2);
  CHECK(families[0].help == "help with \\ backslash");
  CHECK(families[1].merge == GaugeMerge::max);
  CHECK(series[0].labels == schema.series()[0].labels);
  for (const char* bad : {"F x s a_total - h\n", "F c s 9a - h\n", "F c s a_total - h\nS 5 \n", "S 0 {}\n",
                          "F c s a_total - h\nS 0 {x\n", "F c s a_total - h", "hello\n"})
    CHECK_FALSE(parse_directory(bad, families, series, problem));
}

TEST_CASE("the toolkit's series: one per listener and reason with unique listener names", "[metrics]") {
  MetricsSchema schema;
  register_engine_metrics(schema, {"127.0.0.1:8000", "unix:/run/x.sock"});
  auto store = MetricsStore::create(schema, 1);
  const EngineMetrics& engine = engine_metrics();
  engine.accepted[1].add(2);
  engine.refused_on(0, RefusalReason::per_ip).add(1);
  engine.closed_by(CloseReason::max_output).add(3);
  CHECK(total(*store, "netserver_connections_accepted_total", R"({listener="unix:/run/x.sock"})") == 2);
  CHECK(total(*store, "netserver_connections_refused_total", R"({listener="127.0.0.1:8000",reason="per_ip"})") == 1);
  CHECK(total(*store, "netserver_sessions_closed_total", R"({reason="max_output"})") == 3);
  CHECK(total(*store, "netserver_bus_up") == unset_gauge);
  MetricsSchema other;
  CHECK_THROWS_AS(register_engine_metrics(other, {"a", "a"}), std::invalid_argument);
  engine_metrics() = EngineMetrics{};
}
