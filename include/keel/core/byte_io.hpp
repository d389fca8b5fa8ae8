#pragma once
/// @file keel/core/byte_io.hpp
/// @brief A bounds-checked reader and an appending writer for binary formats (journals, codecs,
/// wire protocols). Every decoder of untrusted bytes reads through byte_reader.
///
/// @code
/// keel::byte_reader in(frame);
/// auto version = in.u8();
/// auto length = in.be<std::uint32_t>();
/// if (!version || !length) return version ? length.error() : version.error();
/// auto payload = in.take(*length);               // errc::truncated if the frame is short
/// if (auto end = in.expect_end(); !end) return end.error();   // errc::trailing_bytes
/// @endcode
/// A failed read consumes nothing, so a caller may try another layout from the same position.
#include <keel/core/bytes.hpp>
#include <keel/core/endian.hpp>
#include <keel/core/error.hpp>
#include <keel/core/varint.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace keel {

/// Reads fixed-width integers, varints and byte runs from a view, never past its end.
class byte_reader {
 public:
  explicit byte_reader(bytes_view data) noexcept : data_(data) {}

  /// Bytes not yet read.
  [[nodiscard]] std::size_t remaining() const noexcept { return data_.size() - position_; }
  /// Bytes read so far (the offset of the next read).
  [[nodiscard]] std::size_t position() const noexcept { return position_; }
  /// True when everything has been read.
  [[nodiscard]] bool empty() const noexcept { return remaining() == 0; }

  /// One byte.
  [[nodiscard]] result<std::uint8_t> u8() noexcept {
    if (remaining() < 1) return errc::truncated;
    return data_[position_++];
  }

  /// A big-endian integer of `sizeof(T)` bytes.
  template <detail::fixed_integer T>
  [[nodiscard]] result<T> be() noexcept {
    if (remaining() < sizeof(T)) return errc::truncated;
    const T value = load_be<T>(data_.data() + position_);
    position_ += sizeof(T);
    return value;
  }

  /// A little-endian integer of `sizeof(T)` bytes.
  template <detail::fixed_integer T>
  [[nodiscard]] result<T> le() noexcept {
    if (remaining() < sizeof(T)) return errc::truncated;
    const T value = load_le<T>(data_.data() + position_);
    position_ += sizeof(T);
    return value;
  }

  /// An unsigned LEB128 varint (canonical, at most 64 bits; see decode_varint).
  [[nodiscard]] result<std::uint64_t> varint() noexcept { return decode_varint(data_, position_); }

  /// The next `n` bytes, as a view into the input.
  [[nodiscard]] result<bytes_view> take(std::size_t n) noexcept {
    if (remaining() < n) return errc::truncated;
    const auto out = data_.subspan(position_, n);
    position_ += n;
    return out;
  }

  /// A byte run whose length comes first as a varint; `max_length` bounds what a hostile
  /// length may claim (errc::length_too_large) before anything is allocated by the caller.
  [[nodiscard]] result<bytes_view> take_varint_prefixed(std::size_t max_length) noexcept {
    const auto start = position_;
    const auto length = varint();
    if (!length) return length.error();
    if (*length > max_length) {
      position_ = start;
      return errc::length_too_large;
    }
    auto run = take(static_cast<std::size_t>(*length));
    if (!run) position_ = start;
    return run;
  }

  /// Skips `n` bytes.
  [[nodiscard]] result<void> skip(std::size_t n) noexcept {
    if (remaining() < n) return errc::truncated;
    position_ += n;
    return {};
  }

  /// Succeeds only when every byte was read: a format with a fixed end rejects trailing data.
  [[nodiscard]] result<void> expect_end() const noexcept {
    if (!empty()) return errc::trailing_bytes;
    return {};
  }

 private:
  bytes_view data_;
  std::size_t position_ = 0;
};

/// Appends fixed-width integers, varints and byte runs to a byte buffer.
class byte_writer {
 public:
  explicit byte_writer(bytes& out) noexcept : out_(out) {}

  void u8(std::uint8_t value) { out_.push_back(value); }

  template <detail::fixed_integer T>
  void be(T value) {
    const auto at = grow(sizeof(T));
    store_be<T>(out_.data() + at, value);
  }

  template <detail::fixed_integer T>
  void le(T value) {
    const auto at = grow(sizeof(T));
    store_le<T>(out_.data() + at, value);
  }

  void varint(std::uint64_t value) { append_varint(out_, value); }

  void append(bytes_view data) { out_.insert(out_.end(), data.begin(), data.end()); }

  /// A byte run preceded by its length as a varint (the inverse of take_varint_prefixed).
  void append_varint_prefixed(bytes_view data) {
    varint(data.size());
    append(data);
  }

  /// Bytes written to the buffer so far (including what it held before).
  [[nodiscard]] std::size_t size() const noexcept { return out_.size(); }

 private:
  std::size_t grow(std::size_t n) {
    const auto at = out_.size();
    out_.resize(at + n);
    return at;
  }

  bytes& out_;
};

}  // namespace keel
