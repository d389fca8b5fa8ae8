#include <keel/core/log.hpp>
#include <keel/pg/migrations.hpp>
#include <keel/ratelimit_pg/postgres.hpp>

#include <string>
#include <vector>

namespace keel::ratelimit {
namespace {

// Times are microseconds since the epoch by the server's clock. Algorithm codes: 0 sliding_log,
// 1 sliding_window, 2 gcra, 3 token_bucket (kept as its GCRA equivalent: they decide alike).
constexpr keel::pg::migration ratelimit_migrations[] = {
    {1, "state and decide function", R"sql(
CREATE TABLE keel_ratelimit_state (
  key           text PRIMARY KEY,
  tat           double precision NOT NULL DEFAULT 0,  -- gcra / token_bucket
  window_index  bigint NOT NULL DEFAULT 0,            -- sliding_window
  previous      bigint NOT NULL DEFAULT 0,
  current       bigint NOT NULL DEFAULT 0,
  entries       bigint[] NOT NULL DEFAULT '{}',       -- sliding_log: one timestamp per unit, oldest first
  blocked_until bigint NOT NULL DEFAULT 0,
  expires_at    bigint NOT NULL DEFAULT 0             -- from then on the row is as good as absent
);
CREATE INDEX keel_ratelimit_state_expires ON keel_ratelimit_state (expires_at);

CREATE FUNCTION keel_ratelimit_decide(p_keys text[], p_algorithms bigint[], p_counts bigint[], p_periods bigint[],
                                      p_capacities bigint[], p_blocks bigint[], p_cost bigint)
RETURNS TABLE (allowed boolean, remaining bigint, reset_us bigint, retry_us bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
  now_us bigint := floor(extract(epoch FROM clock_timestamp()) * 1000000);
  n int := coalesce(array_length(p_keys, 1), 0);
  s keel_ratelimit_state;
  ok boolean[] := '{}';
  rem bigint[] := '{}';
  rst bigint[] := '{}';
  rty bigint[] := '{}';
  all_ok boolean := true;
  a boolean; r bigint; rs bigint; rt bigint;
  v_count bigint; v_period bigint; v_cap bigint;
  emission double precision; tolerance double precision; base double precision; tat2 double precision;
  w bigint; prev bigint; cur bigint; elapsed bigint; carried double precision;
  live bigint[]; used bigint;
BEGIN
  INSERT INTO keel_ratelimit_state (key) SELECT DISTINCT k FROM unnest(p_keys) AS k ORDER BY 1 ON CONFLICT (key) DO NOTHING;
  PERFORM 1 FROM keel_ratelimit_state WHERE key = ANY (p_keys) ORDER BY key FOR UPDATE;
  FOR i IN 1 .. n LOOP
    SELECT * INTO s FROM keel_ratelimit_state WHERE key = p_keys[i];
    v_count := p_counts[i]; v_period := p_periods[i]; v_cap := p_capacities[i];
    a := true; r := 0; rs := 0; rt := 0;
    IF s.blocked_until > now_us THEN
      a := false; rs := s.blocked_until - now_us; rt := rs;
    ELSIF p_algorithms[i] IN (2, 3) THEN
      emission := v_period::double precision / v_count;
      tolerance := emission * v_cap;
      base := greatest(s.tat, now_us);
      tat2 := base + emission * p_cost;
      IF now_us < tat2 - tolerance THEN
        a := false;
        rt := ceil(tat2 - tolerance - now_us);
        r := floor((now_us + tolerance - base) / emission + 1e-9);
        rs := ceil(base - now_us);
      ELSE
        r := floor((now_us + tolerance - tat2) / emission + 1e-9);
        rs := ceil(tat2 - now_us);
      END IF;
    ELSIF p_algorithms[i] = 1 THEN
      w := now_us / v_period;
      prev := CASE WHEN s.window_index = w THEN s.previous WHEN s.window_index = w - 1 THEN s.current ELSE 0 END;
      cur := CASE WHEN s.window_index = w THEN s.current ELSE 0 END;
      elapsed := now_us - w * v_period;
      carried := prev::double precision * (v_period - elapsed) / v_period;
      IF carried + cur + p_cost <= v_count THEN
        r := floor(v_count - carried - cur - p_cost + 1e-9);
        rs := (v_period - elapsed) + v_period;
      ELSE
        a := false;
        r := greatest(0, floor(v_count - carried - cur + 1e-9));
        rs := CASE WHEN cur > 0 THEN (v_period - elapsed) + v_period ELSE v_period - elapsed END;
        IF cur + p_cost <= v_count THEN
          rt := greatest(v_period - floor((v_count - cur - p_cost)::double precision * v_period / prev) - elapsed, 1);
        ELSE
          rt := (v_period - elapsed) + greatest(0, v_period - floor((v_count - p_cost)::double precision * v_period / cur));
        END IF;
      END IF;
    ELSE
      live := ARRAY(SELECT e FROM unnest(s.entries) AS e WHERE e > now_us - v_period ORDER BY e);
      used := coalesce(array_length(live, 1), 0);
      IF used + p_cost <= v_count THEN
        r := v_count - used - p_cost;
        rs := v_period;
      ELSE
        a := false;
        r := greatest(0, v_count - used);
        rt := live[used + p_cost - v_count] + v_period - now_us;
        rs := live[used] + v_period - now_us;
      END IF;
    END IF;
    IF NOT a THEN
      all_ok := false;
      IF p_blocks[i] > 0 AND s.blocked_until <= now_us THEN
        UPDATE keel_ratelimit_state SET blocked_until = now_us + p_blocks[i],
               expires_at = greatest(expires_at, now_us + p_blocks[i]) WHERE key = p_keys[i];
        rt := greatest(rt, p_blocks[i]); rs := greatest(rs, p_blocks[i]); r := 0;
      END IF;
    END IF;
    ok := ok || a; rem := rem || r; rst := rst || rs; rty := rty || rt;
  END LOOP;
  IF all_ok THEN
    FOR i IN 1 .. n LOOP
      v_count := p_counts[i]; v_period := p_periods[i];
      IF p_algorithms[i] IN (2, 3) THEN
        emission := v_period::double precision / v_count;
        UPDATE keel_ratelimit_state SET tat = greatest(tat, now_us) + emission * p_cost,
               expires_at = greatest(expires_at, ceil(greatest(tat, now_us) + emission * p_cost)::bigint)
         WHERE key = p_keys[i];
      ELSIF p_algorithms[i] = 1 THEN
        w := now_us / v_period;
        UPDATE keel_ratelimit_state
           SET previous = CASE WHEN window_index = w THEN previous WHEN window_index = w - 1 THEN current ELSE 0 END,
               current = CASE WHEN window_index = w THEN current ELSE 0 END + p_cost,
               window_index = w,
               expires_at = greatest(expires_at, (w + 2) * v_period)
         WHERE key = p_keys[i];
      ELSIF p_cost > 0 THEN
        UPDATE keel_ratelimit_state
           SET entries = ARRAY(SELECT e FROM unnest(entries) AS e WHERE e > now_us - v_period ORDER BY e)
                         || array_fill(now_us, ARRAY[p_cost::int]),
               expires_at = greatest(expires_at, now_us + v_period)
         WHERE key = p_keys[i];
      END IF;
    END LOOP;
  ELSE
    FOR i IN 1 .. n LOOP
      IF ok[i] THEN rem[i] := rem[i] + p_cost; END IF;  -- nothing was spent after all
    END LOOP;
  END IF;
  RETURN QUERY SELECT * FROM unnest(ok, rem, rst, rty);
END
$fn$;

CREATE FUNCTION keel_ratelimit_adjust(p_key text, p_algorithm bigint, p_count bigint, p_period bigint, p_points bigint)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
  now_us bigint := floor(extract(epoch FROM clock_timestamp()) * 1000000);
  emission double precision := p_period::double precision / p_count;
  w bigint := now_us / p_period;
BEGIN
  INSERT INTO keel_ratelimit_state (key) VALUES (p_key) ON CONFLICT (key) DO NOTHING;
  IF p_algorithm IN (2, 3) THEN
    UPDATE keel_ratelimit_state
       SET tat = CASE WHEN p_points >= 0 THEN greatest(tat, now_us) + p_points * emission
                      ELSE greatest(now_us, tat + p_points * emission) END
     WHERE key = p_key;
    UPDATE keel_ratelimit_state SET expires_at = greatest(expires_at, ceil(tat)::bigint) WHERE key = p_key;
  ELSIF p_algorithm = 1 THEN
    UPDATE keel_ratelimit_state
       SET previous = CASE WHEN window_index = w THEN previous WHEN window_index = w - 1 THEN current ELSE 0 END,
           current = CASE WHEN window_index = w THEN current ELSE 0 END,
           window_index = w
     WHERE key = p_key;
    UPDATE keel_ratelimit_state
       SET current = greatest(0, current + p_points),
           previous = CASE WHEN p_points < 0 THEN greatest(0, previous - greatest(0, -p_points - current)) ELSE previous END,
           expires_at = greatest(expires_at, (w + 2) * p_period)
     WHERE key = p_key;
  ELSIF p_points > 0 THEN
    UPDATE keel_ratelimit_state
       SET entries = ARRAY(SELECT e FROM unnest(entries) AS e WHERE e > now_us - p_period ORDER BY e)
                     || array_fill(now_us, ARRAY[p_points::int]),
           expires_at = greatest(expires_at, now_us + p_period)
     WHERE key = p_key;
  ELSIF p_points < 0 THEN
    UPDATE keel_ratelimit_state
       SET entries = entries[1 : greatest(0, coalesce(array_length(entries, 1), 0) + p_points::int)]
     WHERE key = p_key;
  END IF;
END
$fn$;
)sql"},
};

std::int64_t micros(std::chrono::nanoseconds d) noexcept {
  return (d.count() + 999) / 1000;
}

error_code store_error(keel::pg::connection& c, const error_code& ec) {
  if (!c.is_open()) return errc::backend_unavailable;
  log::warn("Postgres rate-limit statement failed",
            {{"error", ec.message()}, {"server", c.last_error().to_string()}});
  return errc::server_error;
}

}  // namespace

postgres_backend::postgres_backend(keel::pg::pool& pool) : pool_(pool) {}

std::span<const keel::pg::migration> postgres_backend::migrations() noexcept {
  return ratelimit_migrations;
}

result<keel::pg::migration_report> postgres_backend::migrate(keel::pg::connection& c) {
  return keel::pg::migrate(c, "ratelimit", ratelimit_migrations);
}

result<void> postgres_backend::decide(std::span<const keyed_limit> limits, std::uint64_t cost,
                                      std::span<decision> out) {
  if (auto checked = check_request(limits, cost, out); !checked) return checked;
  if (limits.empty()) return {};
  std::vector<std::string> keys;
  std::vector<std::int64_t> algorithms, counts, periods, capacities, blocks;
  for (const auto& l : limits) {
    keys.emplace_back(l.key);
    algorithms.push_back(storage_code(l.rule->algorithm));
    counts.push_back(static_cast<std::int64_t>(l.rule->count));
    periods.push_back(micros(l.rule->period));
    capacities.push_back(static_cast<std::int64_t>(l.rule->capacity()));
    blocks.push_back(micros(l.rule->block));
  }
  auto c = pool_.acquire();
  if (!c) return errc::backend_unavailable;
  auto rows = (*c)->query(
      "SELECT allowed, remaining, reset_us, retry_us FROM keel_ratelimit_decide($1, $2, $3, $4, $5, $6, $7)",
      keys, algorithms, counts, periods, capacities, blocks, static_cast<std::int64_t>(cost));
  if (!rows) return store_error(**c, rows.error());
  if (rows->size() != limits.size()) return errc::protocol_error;
  for (std::size_t i = 0; i < limits.size(); ++i) {
    const auto row = (*rows)[i];
    auto allowed = row.get<bool>(0);
    auto remaining = row.get<std::int64_t>(1);
    auto reset = row.get<std::int64_t>(2);
    auto retry = row.get<std::int64_t>(3);
    if (!allowed || !remaining || !reset || !retry) return errc::protocol_error;
    out[i] = {.allowed = *allowed,
              .limit = limits[i].rule->capacity(),
              .remaining = static_cast<std::uint64_t>(std::max<std::int64_t>(*remaining, 0)),
              .reset = std::chrono::microseconds(std::max<std::int64_t>(*reset, 0)),
              .retry_after = std::chrono::microseconds(std::max<std::int64_t>(*retry, 0))};
  }
  return {};
}

result<void> postgres_backend::adjust(const keyed_limit& limit, std::int64_t points) {
  auto c = pool_.acquire();
  if (!c) return errc::backend_unavailable;
  auto done = (*c)->query("SELECT keel_ratelimit_adjust($1, $2, $3, $4, $5)", limit.key,
                          storage_code(limit.rule->algorithm), static_cast<std::int64_t>(limit.rule->count),
                          micros(limit.rule->period), points);
  if (!done) return store_error(**c, done.error());
  return {};
}

result<std::uint64_t> postgres_backend::evict_expired() {
  auto c = pool_.acquire();
  if (!c) return errc::backend_unavailable;
  auto done = (*c)->query(
      "DELETE FROM keel_ratelimit_state WHERE expires_at < floor(extract(epoch FROM clock_timestamp()) * "
      "1000000) "
      "AND blocked_until < floor(extract(epoch FROM clock_timestamp()) * 1000000)");
  if (!done) return store_error(**c, done.error());
  return done->affected();
}

}  // namespace keel::ratelimit
