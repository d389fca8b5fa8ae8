// docs/events.md quotes this file; ctest runs it (examples.events_quickstart).
#include <keel/events.hpp>
#include <keel/pg/local_cluster.hpp>
#include <keel/pg/transaction.hpp>

#include <cstdio>

int main() {
  namespace ev = keel::events;
  auto cluster = keel::pg::local_cluster::start().value();
  auto c = keel::pg::connection::connect(cluster.conninfo()).value();
  ev::migrate(c).value();
  const ev::store events;

  // A new stream: expect no_stream, so two writers cannot both create order-42.
  auto placed = events
                    .append(c, "order-42", ev::expected_version::no_stream(),
                            {{.type = "order_placed",
                              .data = R"({"total": 1250})",
                              .metadata = R"({"correlation_id": "checkout-7"})"}})
                    .value();

  // Appends join the caller's transaction: the events exist exactly when it commits.
  auto tx = keel::pg::transaction::begin(c).value();
  auto paid =
      events.append(c, "order-42", ev::expected_version::exact(placed.version), {{.type = "order_paid"}})
          .value();
  tx.commit().value();

  // A writer that read an old version is told where the stream is; nothing was written.
  auto stale = events.append(c, "order-42", ev::expected_version::exact(0), {{.type = "order_paid"}}).value();
  std::printf("order-42 at version %lld; stale writer: %s, stream at %lld\n",
              static_cast<long long>(paid.version), stale ? "written" : "wrong expected version",
              static_cast<long long>(stale.version));

  // The category in global order, from a checkpoint: never skips an event committed late.
  ev::all_position checkpoint;
  auto page = events.read_all(c, {.after = checkpoint, .category = "order"}).value();
  for (const auto& e : page.events) {
    std::printf("%s #%lld %s %s\n", e.stream.c_str(), static_cast<long long>(e.version), e.type.c_str(),
                e.data.c_str());
  }
  checkpoint = page.next;  // store it with what you built from the events
  return page.events.size() == 2 && !stale ? 0 : 1;
}
