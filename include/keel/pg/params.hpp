#pragma once
/// @file keel/pg/params.hpp
/// @brief Statement parameters ($1..$n), encoded once into one buffer for libpq.
#include <keel/pg/types.hpp>

#include <optional>
#include <vector>

namespace keel::pg {

/// Encoded parameters for one statement execution.
class params {
 public:
  params() = default;
  template <class... Args>
  explicit params(const Args&... args) {
    reserve(sizeof...(Args));
    (add(args), ...);
  }

  /// Appends a parameter; std::nullopt (or an empty optional) sends NULL.
  template <class T>
  params& add(const T& value) {
    if constexpr (detail::is_optional<std::remove_cvref_t<T>>::value) {
      using inner = typename std::remove_cvref_t<T>::value_type;
      if (!value) return add_null(codec_for<inner>::type);
      return add(*value);
    } else if constexpr (std::is_same_v<std::remove_cvref_t<T>, std::nullopt_t>) {
      return add_null(oids::unspecified);
    } else {
      using c = codec_for<T>;
      const auto start = storage_.size();
      if (!c::encode(value, storage_)) {
        storage_.resize(start);
        unencodable_ = true;
      }
      types_.push_back(c::type);
      offsets_.push_back(static_cast<std::ptrdiff_t>(start));
      lengths_.push_back(static_cast<int>(storage_.size() - start));
      formats_.push_back(c::binary ? 1 : 0);
      return *this;
    }
  }

  /// Appends NULL of the given type (0: the server infers it).
  params& add_null(oid type = oids::unspecified) {
    types_.push_back(type);
    offsets_.push_back(-1);
    lengths_.push_back(0);
    formats_.push_back(0);
    return *this;
  }

  void reserve(std::size_t n) {
    types_.reserve(n);
    offsets_.reserve(n);
    lengths_.reserve(n);
    formats_.reserve(n);
  }

  [[nodiscard]] std::size_t size() const noexcept { return types_.size(); }
  /// False if a value could not be encoded (a text value containing a NUL byte).
  [[nodiscard]] bool valid() const noexcept { return !unencodable_; }

  // The arrays libpq takes. values() is rebuilt on each call, as storage may have moved.
  [[nodiscard]] const oid* types() const noexcept { return types_.data(); }
  [[nodiscard]] const char* const* values() const;
  [[nodiscard]] const int* lengths() const noexcept { return lengths_.data(); }
  [[nodiscard]] const int* formats() const noexcept { return formats_.data(); }
  [[nodiscard]] const std::vector<oid>& type_list() const noexcept { return types_; }

 private:
  bytes storage_;
  std::vector<oid> types_;
  std::vector<std::ptrdiff_t> offsets_;  ///< into storage_, or -1 for NULL
  std::vector<int> lengths_;
  std::vector<int> formats_;
  mutable std::vector<const char*> values_;
  bool unencodable_ = false;
};

}  // namespace keel::pg
