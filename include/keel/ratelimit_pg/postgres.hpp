#pragma once
/// @file keel/ratelimit_pg/postgres.hpp
/// @brief The Postgres backend: one statement per decision (a PL/pgSQL function that locks the
/// keys' rows in key order, decides every limit and writes only if all allow).
#include <keel/core/result.hpp>
#include <keel/pg/connection.hpp>
#include <keel/pg/migrations.hpp>
#include <keel/pg/pool.hpp>
#include <keel/ratelimit/backend.hpp>

namespace keel::ratelimit {

/// Limit state in Postgres (table keel_ratelimit_state), shared by every process using the same
/// database. Time is the database server's clock (clock_timestamp()), so hosts agree. Rows of
/// idle keys stay until evict_expired() removes them.
class postgres_backend final : public backend {
 public:
  /// `pool` must outlive the backend; run migrate() once before the first decision.
  explicit postgres_backend(keel::pg::pool& pool);

  /// The table's and functions' migrations (component "ratelimit"), in version order.
  [[nodiscard]] static std::span<const keel::pg::migration> migrations() noexcept;
  /// Creates or upgrades the table and functions: applies migrations() not yet applied.
  [[nodiscard]] static result<keel::pg::migration_report> migrate(keel::pg::connection& c);

  [[nodiscard]] result<void> decide(std::span<const keyed_limit> limits, std::uint64_t cost,
                                    std::span<decision> out) override;
  [[nodiscard]] result<void> adjust(const keyed_limit& limit, std::int64_t points) override;
  [[nodiscard]] std::string_view name() const noexcept override { return "postgres"; }

  /// Deletes the rows of keys whose state has expired; returns how many.
  [[nodiscard]] result<std::uint64_t> evict_expired();

 private:
  keel::pg::pool& pool_;
};

}  // namespace keel::ratelimit
