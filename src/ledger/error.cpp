#include <keel/ledger/error.hpp>

namespace keel::ledger {

namespace {

const char* describe(errc e) noexcept {
  switch (e) {
    case errc::invalid_amount:
      return "not a decimal amount between 0 and 2^128-1: send digits only, as a string";
    case errc::batch_too_large:
      return "too many events in one batch: split it into batches of at most 8190";
    case errc::unknown_account:
      return "no such account at that point: check the id (and that it existed at the time asked)";
    case errc::sequence_out_of_range:
      return "the journal has no entry or tree of that size yet: ask for a sequence below the journal size";
    case errc::invalid_proof:
      return "the proof or checkpoint does not verify: the journal or the proof was altered";
    case errc::corrupt_entry:
      return "a journal entry does not decode: the stored bytes were altered";
    case errc::storage_failure:
      return "the ledger's tables hold rows it did not write (a missing head row, a balance that is not a "
             "u128): run keel-ledger verify against a trusted checkpoint";
    case errc::invalid_argument:
      return "invalid argument: check the request against the documentation";
  }
  return "unknown keel.ledger error";
}

constexpr enum_error_category<errc> category{"keel.ledger", &describe};

}  // namespace

const error_category& ledger_category() noexcept {
  return category;
}

}  // namespace keel::ledger
