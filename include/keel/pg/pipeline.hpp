#pragma once
/// @file keel/pg/pipeline.hpp
/// @brief Pipeline mode (libpq 14+): many statements in one round trip.
#include <keel/pg/connection.hpp>

#include <string>
#include <vector>

namespace keel::pg {

/// Queues statements and sends them without waiting for each answer; sync() collects every
/// result in order. If one statement fails, the statements after it up to the sync are not run
/// (errc::pipeline_aborted), as in a transaction. Not a transaction: earlier statements stay
/// done unless the caller wrapped the pipeline in BEGIN/COMMIT statements.
class pipeline {
 public:
  /// Enters pipeline mode; the connection must be idle.
  [[nodiscard]] static result<pipeline> start(connection& c);

  pipeline(pipeline&& other) noexcept;
  pipeline& operator=(pipeline&&) = delete;
  /// Leaves pipeline mode, discarding results not collected.
  ~pipeline();

  /// Queues `sql` with parameters.
  template <class... Args>
  [[nodiscard]] result<void> add(std::string_view sql, const Args&... args) {
    return add_params(sql, params(args...));
  }
  [[nodiscard]] result<void> add_params(std::string_view sql, const params& values);

  /// Sends everything queued and returns one result per statement, in order. The pipeline
  /// can be used again afterwards.
  [[nodiscard]] result<std::vector<result<rows>>> sync();

  /// Statements queued and not yet synced.
  [[nodiscard]] std::size_t pending() const noexcept { return statements_.size(); }

 private:
  explicit pipeline(connection& c) noexcept : connection_(&c) {}
  [[nodiscard]] result<void> flush_nonblocking();
  connection* connection_;
  std::vector<std::string> statements_;
  bool active_ = true;
};

}  // namespace keel::pg
