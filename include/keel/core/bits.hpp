#pragma once
/// @file keel/core/bits.hpp
/// @brief MSB-first bit writer and reader for compression codecs (Gorilla, Chimp, bit-packing).
///
/// Both work a 64-bit word at a time: writing n bits is a shift and an or, with one store per
/// 64 bits; reading is one unaligned big-endian load and two shifts. Bits are packed most
/// significant first, so the stream reads in the order it was written.
#include <keel/core/assert.hpp>
#include <keel/core/bytes.hpp>
#include <keel/core/endian.hpp>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

namespace keel {

namespace detail {
[[nodiscard]] constexpr std::uint64_t low_bits_mask(unsigned n) noexcept {
  // n in [0, 64]; the double shift keeps n == 64 defined.
  return n == 0 ? 0 : (~std::uint64_t{0} >> (64 - n));
}
}  // namespace detail

/// Appends bit fields to a byte buffer, most significant bit first.
class bit_writer {
 public:
  bit_writer() = default;
  /// Reserves room for about `expected_bits`, to avoid regrowing.
  explicit bit_writer(std::size_t expected_bits) { out_.resize((expected_bits + 63) / 64 * 8); }

  /// Appends the low `count` bits of `value` (count in [0, 64]); higher bits are ignored.
  void write(std::uint64_t value, unsigned count) {
    KEEL_ASSERT(count <= 64, "at most a word at a time");
    KEEL_ASSERT(used_ < 64, "a full word is always flushed");
    value &= detail::low_bits_mask(count);
    const unsigned free = 64 - used_;  // in [1, 64]: a full word is always flushed
    if (count < free) {
      KEEL_ASSERT(count < 64, "count < free <= 64, so the shift is defined");
      word_ = (word_ << count) | value;
      used_ += count;
      return;
    }
    const unsigned rest = count - free;  // in [0, 63]
    KEEL_ASSERT(free >= 1 && rest < 64, "the word has room and the rest fits");
    word_ = ((word_ << (free - 1)) << 1) | (value >> rest);
    flush_word();
    word_ = value & detail::low_bits_mask(rest);
    used_ = rest;
  }

  /// Appends one bit.
  void write_bit(bool bit) { write(bit ? 1U : 0U, 1); }

  /// Bits written so far.
  [[nodiscard]] std::size_t bit_count() const noexcept { return size_ * 8 + used_; }

  /// The bytes written so far, the last one padded with zero bits; the writer is left empty.
  [[nodiscard]] bytes finish() {
    const unsigned tail_bytes = (used_ + 7) / 8;
    if (tail_bytes != 0) {
      reserve_word();
      store_be<std::uint64_t>(out_.data() + size_, word_ << (64 - used_));  // left-align the tail
    }
    out_.resize(size_ + tail_bytes);
    word_ = 0;
    used_ = 0;
    size_ = 0;
    bytes done;
    done.swap(out_);
    return done;
  }

 private:
  void flush_word() {
    reserve_word();
    store_be<std::uint64_t>(out_.data() + size_, word_);
    size_ += 8;
  }
  void reserve_word() {
    // Grow geometrically ahead of the writes, so the common path is a bounds check and a store.
    if (size_ + 8 > out_.size()) [[unlikely]]
      out_.resize(std::max<std::size_t>(64, out_.size() * 2));
  }

  bytes out_;               ///< written bytes, then spare room up to out_.size()
  std::size_t size_ = 0;    ///< bytes written to out_
  std::uint64_t word_ = 0;  ///< the pending bits, right-aligned
  unsigned used_ = 0;       ///< bits pending in word_, in [0, 63]
};

/// Reads bit fields written by bit_writer.
///
/// Reads past the end return zero bits and set a sticky overrun flag instead of failing each
/// call, so a decoder checks `overrun()` once per block rather than once per field.
class bit_reader {
 public:
  explicit bit_reader(bytes_view data) noexcept
      : data_(data.data()), size_(data.size()), bit_size_(data.size() * 8) {}

  /// The next `count` bits (count in [0, 57]) without consuming them.
  [[nodiscard]] std::uint64_t peek(unsigned count) const noexcept {
    KEEL_ASSERT(count <= max_peek, "a peek fits in one unaligned 64-bit load");
    if (count == 0) return 0;
    const std::size_t byte = position_ >> 3;
    std::uint64_t word;
    if (byte + 8 <= size_) [[likely]] {
      word = load_be<std::uint64_t>(data_ + byte);
    } else {
      word = load_tail(byte);
    }
    return (word << (position_ & 7)) >> (64 - count);
  }

  /// Consumes `count` bits (count in [0, 57]).
  void skip(unsigned count) noexcept { position_ += count; }

  /// Reads `count` bits (count in [0, 64]).
  [[nodiscard]] std::uint64_t read(unsigned count) noexcept {
    if (count > max_peek) [[unlikely]] {
      const std::uint64_t high = read(count - 32);
      return (high << 32) | read(32);
    }
    const std::uint64_t value = peek(count);
    position_ += count;
    return value;
  }

  /// Reads one bit.
  [[nodiscard]] bool read_bit() noexcept { return read(1) != 0; }

  /// Bits consumed so far (may exceed the input size after an overrun).
  [[nodiscard]] std::size_t position() const noexcept { return position_; }
  /// Bits left before the end of the input.
  [[nodiscard]] std::size_t remaining() const noexcept {
    return position_ >= bit_size_ ? 0 : bit_size_ - position_;
  }
  /// True once a read went past the end of the input.
  [[nodiscard]] bool overrun() const noexcept { return position_ > bit_size_; }

  static constexpr unsigned max_peek = 57;

 private:
  [[nodiscard]] std::uint64_t load_tail(std::size_t byte) const noexcept {
    std::uint8_t buffer[8] = {};
    if (byte < size_) std::memcpy(buffer, data_ + byte, size_ - byte);
    return load_be<std::uint64_t>(buffer);
  }

  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t bit_size_;
  std::size_t position_ = 0;
};

}  // namespace keel
