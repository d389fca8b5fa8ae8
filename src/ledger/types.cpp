#include <keel/ledger/types.hpp>

#include <algorithm>

namespace keel::ledger {

std::string to_string(u128 value) {
  if (value == 0) return "0";
  std::string digits;
  while (value != 0) {
    digits.push_back(static_cast<char>('0' + static_cast<int>(value % 10)));
    value /= 10;
  }
  std::reverse(digits.begin(), digits.end());
  return digits;
}

result<u128> parse_u128(std::string_view text) {
  if (text.empty() || text.size() > 39) return errc::invalid_amount;
  u128 value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return errc::invalid_amount;
    const auto digit = static_cast<unsigned>(c - '0');
    if (value > (u128_max - digit) / 10) return errc::invalid_amount;
    value = value * 10 + digit;
  }
  return value;
}

std::string_view to_string(account_result r) noexcept {
  switch (r) {
    case account_result::ok:
      return "ok";
    case account_result::linked_event_failed:
      return "linked_event_failed";
    case account_result::linked_event_chain_open:
      return "linked_event_chain_open";
    case account_result::timestamp_must_be_zero:
      return "timestamp_must_be_zero";
    case account_result::reserved_flag:
      return "reserved_flag";
    case account_result::id_must_not_be_zero:
      return "id_must_not_be_zero";
    case account_result::id_must_not_be_int_max:
      return "id_must_not_be_int_max";
    case account_result::flags_are_mutually_exclusive:
      return "flags_are_mutually_exclusive";
    case account_result::balances_must_be_zero:
      return "balances_must_be_zero";
    case account_result::ledger_must_not_be_zero:
      return "ledger_must_not_be_zero";
    case account_result::code_must_not_be_zero:
      return "code_must_not_be_zero";
    case account_result::exists_with_different_flags:
      return "exists_with_different_flags";
    case account_result::exists_with_different_user_data:
      return "exists_with_different_user_data";
    case account_result::exists_with_different_ledger:
      return "exists_with_different_ledger";
    case account_result::exists_with_different_code:
      return "exists_with_different_code";
    case account_result::exists:
      return "exists";
  }
  return "unknown";
}

std::string_view to_string(transfer_result r) noexcept {
  switch (r) {
    case transfer_result::ok:
      return "ok";
    case transfer_result::linked_event_failed:
      return "linked_event_failed";
    case transfer_result::linked_event_chain_open:
      return "linked_event_chain_open";
    case transfer_result::timestamp_must_be_zero:
      return "timestamp_must_be_zero";
    case transfer_result::reserved_flag:
      return "reserved_flag";
    case transfer_result::id_must_not_be_zero:
      return "id_must_not_be_zero";
    case transfer_result::id_must_not_be_int_max:
      return "id_must_not_be_int_max";
    case transfer_result::flags_are_mutually_exclusive:
      return "flags_are_mutually_exclusive";
    case transfer_result::debit_account_id_must_not_be_zero:
      return "debit_account_id_must_not_be_zero";
    case transfer_result::debit_account_id_must_not_be_int_max:
      return "debit_account_id_must_not_be_int_max";
    case transfer_result::credit_account_id_must_not_be_zero:
      return "credit_account_id_must_not_be_zero";
    case transfer_result::credit_account_id_must_not_be_int_max:
      return "credit_account_id_must_not_be_int_max";
    case transfer_result::accounts_must_be_different:
      return "accounts_must_be_different";
    case transfer_result::pending_id_must_be_zero:
      return "pending_id_must_be_zero";
    case transfer_result::pending_id_must_not_be_zero:
      return "pending_id_must_not_be_zero";
    case transfer_result::pending_id_must_not_be_int_max:
      return "pending_id_must_not_be_int_max";
    case transfer_result::pending_id_must_be_different:
      return "pending_id_must_be_different";
    case transfer_result::timeout_reserved_for_pending_transfer:
      return "timeout_reserved_for_pending_transfer";
    case transfer_result::amount_must_not_be_zero:
      return "amount_must_not_be_zero";
    case transfer_result::ledger_must_not_be_zero:
      return "ledger_must_not_be_zero";
    case transfer_result::code_must_not_be_zero:
      return "code_must_not_be_zero";
    case transfer_result::debit_account_not_found:
      return "debit_account_not_found";
    case transfer_result::credit_account_not_found:
      return "credit_account_not_found";
    case transfer_result::accounts_must_have_the_same_ledger:
      return "accounts_must_have_the_same_ledger";
    case transfer_result::transfer_must_have_the_same_ledger_as_accounts:
      return "transfer_must_have_the_same_ledger_as_accounts";
    case transfer_result::pending_transfer_not_found:
      return "pending_transfer_not_found";
    case transfer_result::pending_transfer_not_pending:
      return "pending_transfer_not_pending";
    case transfer_result::pending_transfer_has_different_debit_account_id:
      return "pending_transfer_has_different_debit_account_id";
    case transfer_result::pending_transfer_has_different_credit_account_id:
      return "pending_transfer_has_different_credit_account_id";
    case transfer_result::pending_transfer_has_different_ledger:
      return "pending_transfer_has_different_ledger";
    case transfer_result::pending_transfer_has_different_code:
      return "pending_transfer_has_different_code";
    case transfer_result::exceeds_pending_transfer_amount:
      return "exceeds_pending_transfer_amount";
    case transfer_result::pending_transfer_has_different_amount:
      return "pending_transfer_has_different_amount";
    case transfer_result::pending_transfer_already_posted:
      return "pending_transfer_already_posted";
    case transfer_result::pending_transfer_already_voided:
      return "pending_transfer_already_voided";
    case transfer_result::pending_transfer_expired:
      return "pending_transfer_expired";
    case transfer_result::exists_with_different_flags:
      return "exists_with_different_flags";
    case transfer_result::exists_with_different_pending_id:
      return "exists_with_different_pending_id";
    case transfer_result::exists_with_different_timeout:
      return "exists_with_different_timeout";
    case transfer_result::exists_with_different_debit_account_id:
      return "exists_with_different_debit_account_id";
    case transfer_result::exists_with_different_credit_account_id:
      return "exists_with_different_credit_account_id";
    case transfer_result::exists_with_different_amount:
      return "exists_with_different_amount";
    case transfer_result::exists_with_different_user_data:
      return "exists_with_different_user_data";
    case transfer_result::exists_with_different_ledger:
      return "exists_with_different_ledger";
    case transfer_result::exists_with_different_code:
      return "exists_with_different_code";
    case transfer_result::exists:
      return "exists";
    case transfer_result::overflows_debits_pending:
      return "overflows_debits_pending";
    case transfer_result::overflows_credits_pending:
      return "overflows_credits_pending";
    case transfer_result::overflows_debits_posted:
      return "overflows_debits_posted";
    case transfer_result::overflows_credits_posted:
      return "overflows_credits_posted";
    case transfer_result::overflows_debits:
      return "overflows_debits";
    case transfer_result::overflows_credits:
      return "overflows_credits";
    case transfer_result::overflows_timeout:
      return "overflows_timeout";
    case transfer_result::exceeds_credits:
      return "exceeds_credits";
    case transfer_result::exceeds_debits:
      return "exceeds_debits";
    case transfer_result::debit_account_already_closed:
      return "debit_account_already_closed";
    case transfer_result::credit_account_already_closed:
      return "credit_account_already_closed";
    case transfer_result::closing_transfer_must_be_pending:
      return "closing_transfer_must_be_pending";
  }
  return "unknown";
}

}  // namespace keel::ledger
