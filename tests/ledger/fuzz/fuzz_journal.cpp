// libFuzzer target for keel::ledger's decoders of stored and received bytes. The first input
// byte picks what to attack:
//   0: decode on the raw input; what decodes must be the one encoding of what it decoded to
//   1: an entry built from the input, encoded, one byte changed, decoded again (the mutations
//      then reach the field checks instead of stopping at the version byte)
//   2: merkle_frontier::parse on a size and hashes from the input, then an append
//   3: parse_u128 on the input as text, against to_string
//   4: verify_inclusion and verify_consistency on proofs, sizes and roots from the input
#include <keel/ledger/journal.hpp>
#include <keel/ledger/merkle.hpp>
#include <keel/ledger/types.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

namespace ledger = keel::ledger;

namespace {

void require(bool condition) {
  if (!condition) std::abort();
}

ledger::u128 take_u128(FuzzedDataProvider& in) {
  const auto high = in.ConsumeIntegral<std::uint64_t>();
  return (static_cast<ledger::u128>(high) << 64U) | in.ConsumeIntegral<std::uint64_t>();
}

void decode_raw(keel::bytes_view data) {
  const auto entry = ledger::decode(data);
  if (!entry) return;
  require(data.size() == ledger::entry_size);
  const auto again = ledger::encode(*entry);
  require(std::equal(again.begin(), again.end(), data.begin(), data.end()));
}

ledger::journal_entry entry_from(FuzzedDataProvider& in) {
  ledger::journal_entry e;
  e.kind = static_cast<ledger::entry_kind>(in.ConsumeIntegralInRange<int>(1, 3));
  if (e.kind == ledger::entry_kind::account_created) {
    auto& a = e.account;
    a.id = take_u128(in);
    a.user_data = take_u128(in);
    a.ledger = in.ConsumeIntegral<std::uint32_t>();
    a.code = in.ConsumeIntegral<std::uint16_t>();
    a.flags = in.ConsumeIntegral<std::uint16_t>();
    a.timestamp = in.ConsumeIntegral<std::uint64_t>();
  } else {
    auto& t = e.transfer;
    t.id = take_u128(in);
    t.debit_account_id = take_u128(in);
    t.credit_account_id = take_u128(in);
    t.amount = take_u128(in);
    t.pending_id = take_u128(in);
    t.user_data = take_u128(in);
    t.timeout = in.ConsumeIntegral<std::uint32_t>();
    t.ledger = in.ConsumeIntegral<std::uint32_t>();
    t.code = in.ConsumeIntegral<std::uint16_t>();
    t.flags = in.ConsumeIntegral<std::uint16_t>();
    t.timestamp = in.ConsumeIntegral<std::uint64_t>();
  }
  return e;
}

void round_trip_and_mutate(FuzzedDataProvider& in) {
  const auto entry = entry_from(in);
  const auto encoded = ledger::encode(entry);
  const auto decoded = ledger::decode(encoded);
  require(decoded.has_value());
  if (entry.kind == ledger::entry_kind::account_created) {
    require(decoded->account == entry.account);
  } else {
    require(decoded->transfer == entry.transfer);
  }
  require(decoded->kind == entry.kind);

  auto changed = encoded;
  const auto at = in.ConsumeIntegralInRange<std::size_t>(0, changed.size() - 1);
  changed[at] = in.ConsumeIntegral<std::uint8_t>();
  decode_raw(changed);
  // Cut short or run long: a wrong size never decodes.
  const auto cut = in.ConsumeIntegralInRange<std::size_t>(0, changed.size() - 1);
  require(!ledger::decode(keel::bytes_view(changed.data(), cut)));
  std::vector<std::uint8_t> longer(changed.begin(), changed.end());
  longer.push_back(0);
  require(!ledger::decode(longer));
}

void frontier(FuzzedDataProvider& in) {
  const auto size = in.ConsumeIntegral<std::uint64_t>();
  const auto hashes = in.ConsumeRemainingBytes<std::uint8_t>();
  auto parsed = ledger::merkle_frontier::parse(size, hashes);
  if (!parsed) return;
  require(parsed->size() == size);
  const auto serialized = parsed->serialize();
  require(serialized == keel::bytes(hashes.begin(), hashes.end()));
  const auto root = parsed->root();
  if (size == UINT64_MAX) return;
  std::vector<ledger::completed_node> completed;
  parsed->append(root, completed);
  require(parsed->size() == size + 1);
  require(!completed.empty());
}

void decimal(FuzzedDataProvider& in) {
  const auto text = in.ConsumeRemainingBytesAsString();
  const auto value = ledger::parse_u128(text);
  if (!value) return;
  const auto first_significant = text.find_first_not_of('0');
  const auto canonical =
      first_significant == std::string::npos ? std::string("0") : text.substr(first_significant);
  require(ledger::to_string(*value) == canonical);
}

void proofs(FuzzedDataProvider& in) {
  const auto index = in.ConsumeIntegral<std::uint64_t>();
  const auto old_size = in.ConsumeIntegral<std::uint64_t>() % 1024;
  const auto tree_size = in.ConsumeIntegral<std::uint64_t>() % 4096;
  const auto leaf = in.ConsumeBytes<std::uint8_t>(in.ConsumeIntegralInRange<std::size_t>(0, 40));
  const auto root = in.ConsumeBytes<std::uint8_t>(in.ConsumeIntegralInRange<std::size_t>(0, 40));
  const auto old_root = in.ConsumeBytes<std::uint8_t>(in.ConsumeIntegralInRange<std::size_t>(0, 40));
  std::vector<keel::bytes> path;
  while (in.remaining_bytes() > 0 && path.size() < 80) {
    const auto hash =
        in.ConsumeBytes<std::uint8_t>(in.ConsumeBool() ? 32 : in.ConsumeIntegralInRange<std::size_t>(0, 40));
    path.emplace_back(hash.begin(), hash.end());
  }
  const auto inclusion = ledger::verify_inclusion(index, tree_size, leaf, path, root);
  const auto consistency = ledger::verify_consistency(old_size, tree_size, old_root, root, path);
  // The fuzzer can make a proof verify (it sees the root the verifier computes and copies it
  // in). What it must never get through is a hash that is not one, or a proof that still
  // verifies with any part of it changed.
  const auto all_hashes = [&](std::initializer_list<const std::vector<std::uint8_t>*> some) {
    for (const auto* h : some) {
      if (h->size() != 32) return false;
    }
    return std::all_of(path.begin(), path.end(), [](const keel::bytes& p) { return p.size() == 32; });
  };
  const auto flipped = [](std::vector<std::uint8_t> h) {
    if (h.empty()) {
      h.push_back(0);
    } else {
      h[h.size() / 2] ^= 0x01U;
    }
    return h;
  };
  auto shorter = path;
  if (!shorter.empty()) shorter.pop_back();
  auto longer = path;
  longer.push_back(keel::bytes(32, 0));
  if (inclusion) {
    require(all_hashes({&leaf, &root}));
    require(!ledger::verify_inclusion(index, tree_size, flipped(leaf), path, root));
    require(!ledger::verify_inclusion(index, tree_size, leaf, path, flipped(root)));
    if (!path.empty()) require(!ledger::verify_inclusion(index, tree_size, leaf, shorter, root));
    require(!ledger::verify_inclusion(index, tree_size, leaf, longer, root));
  }
  if (consistency) {
    // Equal sizes compare the two roots and nothing else (the probes accept any equal bytes).
    require(old_size == tree_size ? path.empty() && old_root == root : all_hashes({&old_root, &root}));
    require(!ledger::verify_consistency(old_size, tree_size, flipped(old_root), root, path));
    require(!ledger::verify_consistency(old_size, tree_size, old_root, flipped(root), path));
    if (!path.empty()) require(!ledger::verify_consistency(old_size, tree_size, old_root, root, shorter));
    require(!ledger::verify_consistency(old_size, tree_size, old_root, root, longer));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  FuzzedDataProvider in(data + 1, size - 1);
  switch (data[0] % 5) {
    case 0:
      decode_raw({data + 1, size - 1});
      break;
    case 1:
      round_trip_and_mutate(in);
      break;
    case 2:
      frontier(in);
      break;
    case 3:
      decimal(in);
      break;
    default:
      proofs(in);
      break;
  }
  return 0;
}
