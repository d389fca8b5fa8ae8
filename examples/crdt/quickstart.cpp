// docs/crdt.md quotes this file; ctest runs it (examples.crdt_quickstart).
#include <keel/crdt.hpp>

#include <cstdio>
#include <vector>

int main() {
  namespace crdt = keel::crdt;

  // Two replicas of a text edit at once, offline; deltas since each other's versions meet.
  crdt::text alice(1), bob(2);
  alice.insert(0, "hello world").value();
  bob.apply(alice.delta_since(bob.version())).value();
  alice.insert(5, ",").value();    // "hello, world"
  bob.erase(6, 5).value();         // "hello "
  bob.insert(6, "there").value();  // "hello there"
  alice.apply(bob.delta_since(alice.version())).value();
  bob.apply(alice.delta_since(bob.version())).value();
  std::printf("%s | %s\n", alice.str().c_str(), bob.str().c_str());  // hello, there | hello, there

  // Undo takes back only alice's own edit.
  alice.undo();
  bob.apply(alice.delta_since(bob.version())).value();
  std::printf("%s\n", bob.str().c_str());  // hello there

  // A saved document loads without replaying its history.
  const auto saved = bob.save();
  auto carol = crdt::text::load(saved, 3).value();
  std::printf("%zu bytes, %zu characters\n", saved.size(), carol.size());

  // An add-wins set: a concurrent add and remove of one element keep it.
  crdt::or_set mine(1), theirs(2);
  mine.add("milk");
  theirs.apply(mine.delta_since(theirs.version())).value();
  theirs.remove("milk");
  mine.add("milk");
  mine.apply(theirs.delta_since(mine.version())).value();
  std::printf("milk: %s\n", mine.contains("milk") ? "kept" : "gone");  // kept

  // Yjs's updates, merged and diffed without a document (what a sync server keeps).
  const std::vector<keel::bytes> updates;  // as received from Yjs clients
  const auto merged = crdt::yjs::merge_updates(updates).value();
  const auto state = crdt::yjs::state_vector_from_update(merged).value();
  std::printf("%zu-byte update, state vector of %zu bytes\n", merged.size(), state.size());
  return 0;
}
