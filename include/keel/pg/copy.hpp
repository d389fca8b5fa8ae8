#pragma once
/// @file keel/pg/copy.hpp
/// @brief Bulk ingest with COPY ... FROM STDIN in binary format.
#include <keel/pg/connection.hpp>

#include <initializer_list>
#include <string_view>

namespace keel::pg {

/// Streams rows into a table with binary COPY: the fastest way to load many rows.
/// Values are sent in their binary form, so each C++ type must match its column's type
/// exactly (int64_t for int8, std::string for text, ...); a mismatch fails the COPY at finish()
/// and nothing is loaded.
class copy_writer {
 public:
  /// Starts COPY table (columns...) FROM STDIN. Identifiers are quoted; no values are spliced.
  [[nodiscard]] static result<copy_writer> start(connection& c, std::string_view table,
                                                 std::initializer_list<std::string_view> columns);

  copy_writer(copy_writer&& other) noexcept;
  copy_writer& operator=(copy_writer&&) = delete;
  /// Aborts the COPY if finish() was not called: nothing is loaded.
  ~copy_writer();

  /// Appends one row; must have one value per column. std::optional sends NULL.
  template <class... Args>
  [[nodiscard]] result<void> write_row(const Args&... values) {
    if (sizeof...(Args) != columns_) return errc::invalid_argument;
    byte_writer(buffer_).be(static_cast<std::int16_t>(sizeof...(Args)));  // field count
    bool ok = true;
    ((ok = ok && write_field(values)), ...);
    if (!ok) return errc::invalid_argument;
    ++rows_;
    if (buffer_.size() >= flush_threshold) return flush();
    return {};
  }

  /// Ends the COPY. @returns the number of rows loaded, or the server's error (nothing loaded).
  [[nodiscard]] result<std::uint64_t> finish();

 private:
  copy_writer(connection& c, std::size_t columns) noexcept : connection_(&c), columns_(columns) {}

  template <class T>
  bool write_field(const T& value) {
    using plain = std::remove_cvref_t<T>;
    if constexpr (detail::is_optional<plain>::value) {
      if (!value) {
        byte_writer(buffer_).be(std::int32_t{-1});  // NULL
        return true;
      }
      return write_field(*value);
    } else {
      using c = codec_for<T>;
      const auto length_at = buffer_.size();
      byte_writer(buffer_).be(std::int32_t{0});  // the length, filled in below
      bool ok;
      if constexpr (c::binary) {
        ok = c::encode(value, buffer_);
      } else if constexpr (std::is_base_of_v<text_param_codec, c>) {
        // Binary text is the raw UTF-8 bytes, without the terminator text parameters carry.
        ok = c::encode(value, buffer_);
        if (ok) buffer_.pop_back();
      } else {
        static_assert(c::binary, "this type has no binary COPY form; convert it before copying");
      }
      store_be(buffer_.data() + length_at, static_cast<std::uint32_t>(buffer_.size() - length_at - 4));
      return ok;
    }
  }

  [[nodiscard]] result<void> flush();

  static constexpr std::size_t flush_threshold = std::size_t{256} * 1024;
  connection* connection_;
  std::size_t columns_;
  bytes buffer_;
  std::uint64_t rows_ = 0;
  bool active_ = true;
};

}  // namespace keel::pg
