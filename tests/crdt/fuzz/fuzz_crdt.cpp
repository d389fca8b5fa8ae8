// libFuzzer target for keel::crdt's decoders of untrusted bytes. The first input byte picks what
// to attack; the rest is the bytes:
//   0: text::apply on a replica with text of its own: refused with nothing changed, or applied
//      and then a consistent document (its save loads to the same text, a delta since nothing
//      rebuilds it)
//   1: text::load: refused, or a document whose save loads to the same text and saves the same
//   2: yjs::decode_update: refused, or an update that encodes to bytes decoding to the same
//      structs, whose state vector and diffs are computed without a fault
//   3: yjs::merge_updates of the bytes cut in two where the next byte says, and with a real update
//   4: the counter, registers, set and maps (the next byte picks one): apply on a fresh replica
//      (refused with nothing changed, or a state whose save loads to the same save) and load
#include <keel/crdt.hpp>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

namespace crdt = keel::crdt;
namespace yjs = keel::crdt::yjs;

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

// Written by npm yjs 13.6.33 (the unit tests' golden update).
const std::vector<std::uint8_t> real_update = {0x01, 0x01, 0x09, 0x00, 0x44, 0x07, 0x00, 0x01,
                                               0x3e, 0x01, 0x07, 0x02, 0x02, 0x01, 0x0c, 0x01};

void check_text_delta(keel::bytes_view data) {
  crdt::text doc(99);
  require(doc.insert(0, "mine, before").has_value());
  const auto before = doc.save();
  if (!doc.apply(data)) {
    require(doc.save() == before);
    return;
  }
  const auto saved = doc.save();
  auto loaded = crdt::text::load(saved, 5);
  require(loaded.has_value() && loaded->str() == doc.str() && loaded->save() == saved);
  crdt::text rebuilt(6);
  require(rebuilt.apply(doc.delta_since({})).has_value());
  require(rebuilt.str() == doc.str());
}

void check_text_load(keel::bytes_view data) {
  auto doc = crdt::text::load(data, 3);
  if (!doc) return;
  const auto saved = doc->save();
  auto again = crdt::text::load(saved, 3);
  require(again.has_value() && again->str() == doc->str() && again->save() == saved);
  (void)doc->insert(doc->size(), "x").value();
}

void check_yjs_update(keel::bytes_view data) {
  auto u = yjs::decode_update(data);
  if (!u) return;
  const auto encoded = yjs::encode_update(*u);
  auto back = yjs::decode_update(encoded);
  require(back.has_value() && back->blocks.size() == u->blocks.size());
  require(yjs::encode_update(*back) == encoded);
  const auto sv = yjs::state_vector_from_update(data);
  require(sv.has_value());
  require(yjs::diff_update(data, *sv).has_value());
  require(yjs::diff_update(data, yjs::encode_state_vector({{7, 3}, {9, 1}})).has_value());
}

void check_yjs_merge(keel::bytes_view data) {
  if (data.empty()) return;
  const auto cut = std::min<std::size_t>(data[0], data.size() - 1);
  const auto rest = data.subspan(1);
  const std::vector<keel::bytes_view> parts{rest.first(cut), rest.subspan(cut), real_update};
  auto merged = yjs::merge_updates(parts);
  if (!merged) return;
  auto decoded = yjs::decode_update(*merged);
  require(decoded.has_value());
  const std::vector<keel::bytes_view> again{*merged, *merged};
  require(yjs::merge_updates(again).has_value());
}

template <class T>
void check_state_type(keel::bytes_view data) {
  T replica(9);
  const auto before = replica.save();
  if (replica.apply(data)) {
    const auto saved = replica.save();
    auto loaded = T::load(saved, 9);
    require(loaded.has_value() && loaded->save() == saved);
  } else {
    require(replica.save() == before);
  }
  if (auto loaded = T::load(data, 4)) {
    const auto saved = loaded->save();
    auto again = T::load(saved, 4);
    require(again.has_value() && again->save() == saved);
  }
}

void check_state_types(keel::bytes_view data) {
  if (data.empty()) return;
  const auto rest = data.subspan(1);
  switch (data[0] % 7) {
    case 0:
      return check_state_type<crdt::pn_counter>(rest);
    case 1:
      return check_state_type<crdt::lww_register>(rest);
    case 2:
      return check_state_type<crdt::mv_register>(rest);
    case 3:
      return check_state_type<crdt::or_set>(rest);
    case 4:
      return check_state_type<crdt::lww_map>(rest);
    case 5:
      return check_state_type<crdt::or_map<crdt::or_set>>(rest);
    default:
      return check_state_type<crdt::or_map<crdt::or_map<crdt::mv_register>>>(rest);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const keel::bytes_view input(data + 1, size - 1);
  switch (data[0] % 5) {
    case 0:
      check_text_delta(input);
      break;
    case 1:
      check_text_load(input);
      break;
    case 2:
      check_yjs_update(input);
      break;
    case 3:
      check_yjs_merge(input);
      break;
    default:
      check_state_types(input);
  }
  return 0;
}
