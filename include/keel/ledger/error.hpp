#pragma once
/// @file keel/ledger/error.hpp
/// @brief keel::ledger errors. Domain outcomes are result codes (types.hpp), not these.
#include <keel/core/error.hpp>

namespace keel::ledger {

/// What went wrong in a keel::ledger call. A Postgres failure of pg_engine keeps its
/// keel::pg::errc (with its SQLSTATE in the connection's last_error()): match e.g.
/// `ec == keel::pg::errc::connection_lost` or `keel::pg::is_retryable(ec)`; these are the
/// ledger's own.
enum class errc {
  invalid_amount = 1,     ///< text is not a decimal u128
  batch_too_large,        ///< more than max_batch events in one call
  unknown_account,        ///< a query named an account that does not exist
  sequence_out_of_range,  ///< a journal sequence or tree size beyond the journal
  invalid_proof,          ///< a proof or checkpoint failed verification
  corrupt_entry,          ///< a journal entry does not decode
  storage_failure,        ///< the stored rows are not what the ledger wrote (not a Postgres error)
  invalid_argument,       ///< a malformed request (e.g. page size 0)
};

/// The category of ledger::errc ("keel.ledger").
[[nodiscard]] const error_category& ledger_category() noexcept;

}  // namespace keel::ledger

KEEL_ERROR_ENUM(keel::ledger, ledger_category);
