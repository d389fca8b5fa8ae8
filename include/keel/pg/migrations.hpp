#pragma once
/// @file keel/pg/migrations.hpp
/// @brief Versioned SQL migrations per component, applied once, in order, under an advisory
/// lock, with checksums that catch edits to applied migrations.
#include <keel/pg/connection.hpp>

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace keel::pg {

/// One migration of a component. Versions increase; an applied migration is never edited.
struct migration {
  std::int64_t version;
  std::string_view name;
  std::string_view sql;  ///< one or more statements, run in one transaction
};

/// What migrate() did.
struct migration_report {
  std::vector<std::int64_t> applied;  ///< versions applied by this call
  std::size_t already_applied = 0;    ///< versions found applied before
};

/// Applies `component`'s migrations that are not applied yet, in version order, each in its
/// own transaction together with its record in keel_migrations. Several processes may call it
/// at once: a Postgres advisory lock makes them take turns, and each migration runs once.
/// @returns errc::migration_checksum_mismatch if an applied migration's SQL changed (nothing
/// further is applied), errc::migration_failed if one fails (it is rolled back; the ones before
/// it stay applied; the server's message is in c.last_error()), errc::invalid_argument if the
/// versions are not strictly increasing.
[[nodiscard]] result<migration_report> migrate(connection& c, std::string_view component,
                                               std::span<const migration> migrations);

}  // namespace keel::pg
