// The PRQL parser: the book's constructs become the expected trees (as S-expressions), bad
// input gets an error at its place with a caret excerpt, and hostile input (deep nesting, random
// bytes) gets an error, never a crash.
#include <keel/dsl.hpp>

#include <doctest/doctest.h>

#include <random>
#include <string>

namespace dsl = keel::dsl;

namespace {

std::string tree(std::string_view text) {
  auto parsed = dsl::parse(text);
  if (!parsed) {
    FAIL_CHECK(parsed.error().render(text));
    return "";
  }
  return dsl::ast::to_string(*parsed);
}

dsl::diagnostic error_of(std::string_view text) {
  auto parsed = dsl::parse(text);
  REQUIRE_MESSAGE(!parsed, "parsed: " << (parsed ? dsl::ast::to_string(*parsed) : ""));
  return parsed.error();
}

}  // namespace

TEST_SUITE("unit") {
  TEST_CASE("pipelines: stages by | or new lines, calls by juxtaposition, named and assigned arguments") {
    CHECK(tree("from employees") == "(pipeline (from employees))");
    CHECK(tree("from employees | filter age > 30 | take 10") ==
          "(pipeline (from employees) (filter (> age 30)) (take 10))");
    CHECK(tree("from employees\nfilter age > 30\n\nselect {name, age}  # a comment\n") ==
          "(pipeline (from employees) (filter (> age 30)) (select (tuple name age)))");
    CHECK(tree("from e = employees | derive gross = salary + bonus") ==
          "(pipeline (from e=employees) (derive gross=(+ salary bonus)))");
    CHECK(tree("from t | derive {total = a * 2 + b, ratio = a / b}") ==
          "(pipeline (from t) (derive (tuple total=(+ (* a 2) b) ratio=(/ a b))))");
    CHECK(tree("from t | sort {-salary, name} | sort -age") ==
          "(pipeline (from t) (sort (tuple (- salary) name)) (sort (- age)))");
    CHECK(tree("from t | take 1..10 | take ..5") == "(pipeline (from t) (take (.. 1 10)) (take (.. _ 5)))");
    CHECK(tree("from a | join side:left b (==id)") == "(pipeline (from a) (join side:left b (== id)))");
    CHECK(tree("from a | join b (this.id == that.a_id)") ==
          "(pipeline (from a) (join b (== this.id that.a_id)))");
    CHECK(tree("from t\ngroup {dept} (\n  aggregate {n = count this, total = sum salary}\n)") ==
          "(pipeline (from t) (group (tuple dept) (pipeline (aggregate (tuple n=(count this) total=(sum "
          "salary))))))");
    CHECK(tree("from t | window rows:-2..0 (derive {avg3 = average x})") ==
          "(pipeline (from t) (window rows:(.. (- 2) 0) (pipeline (derive (tuple avg3=(average x))))))");
    // A backslash at a line's start continues the line before.
    CHECK(tree("from t | select {\n  a,\n  b\n}\n| take 3") ==
          "(pipeline (from t) (select (tuple a b)) (take 3))");
    CHECK(tree("from t\nderive x = a\n  \\ + b") == "(pipeline (from t) (derive x=(+ a b)))");
  }

  TEST_CASE("expressions: precedence, literals, parameters, session attributes, case, f-strings") {
    CHECK(tree("from t | filter a + b * c ** 2 ** 3 > 1 && !d || e ?? f == g") ==
          "(pipeline (from t) (filter (|| (&& (> (+ a (* b (** c (** 2 3)))) 1) (! d)) (?? e (== f g)))))");
    CHECK(tree("from t | derive {q = a // b % c, s = a - b, n = a-b}") ==
          "(pipeline (from t) (derive (tuple q=(% (// a b) c) s=(- a b) n=(- a b))))");
    CHECK(tree("from t | filter name ~= \"^A\" && x != null") ==
          "(pipeline (from t) (filter (&& (~= name \"^A\") (!= x null))))");
    CHECK(tree("from t | filter id == $1 && tenant == @tenant && kind == $kind") ==
          "(pipeline (from t) (filter (&& (&& (== id $1) (== tenant @tenant)) (== kind $kind))))");
    CHECK(tree("from t | derive {d = @2024-01-31, ts = @2024-01-31T10:30:00, h = @10:30, f = 1_000, g = "
               "2.5e-3}") ==
          "(pipeline (from t) (derive (tuple d=@2024-01-31 ts=@2024-01-31T10:30:00 h=@10:30 f=1000 "
          "g=2.5e-3)))");
    CHECK(tree("from t | derive size = case [x > 10 => \"big\", x > 5 => 'mid', true => null]") ==
          "(pipeline (from t) (derive size=(case (> x 10) \"big\" (> x 5) \"mid\" true null)))");
    CHECK(tree("from t | derive greeting = f\"Hi {first_name} {last_name}!\"") ==
          "(pipeline (from t) (derive greeting=(f \"Hi \" first_name \" \" last_name \"!\")))");
    CHECK(tree("from t | derive {u = text.upper name, a = math.abs (x - 1)}") ==
          "(pipeline (from t) (derive (tuple u=(text.upper name) a=(math.abs (- x 1)))))");
    CHECK(tree("from t | filter (age | in 18..65)") ==
          "(pipeline (from t) (filter (pipeline age (in (.. 18 65)))))");
    CHECK(tree("from t | filter (name | in [\"a\", \"b\\\"c\"])") ==
          "(pipeline (from t) (filter (pipeline name (in (array \"a\" \"b\\\"c\")))))");
    CHECK(tree("from t | select {t.*}") == "(pipeline (from t) (select (tuple t.*)))");
    // A range of dates: ".." ends the first literal (it was read as part of it).
    CHECK(tree("from t | filter (d | in @2022-01-01..@2022-06-30)") ==
          "(pipeline (from t) (filter (pipeline d (in (.. @2022-01-01 @2022-06-30)))))");
    CHECK(tree("from t | derive x = @10:30:00.5") == "(pipeline (from t) (derive x=@10:30:00.5))");
  }

  TEST_CASE("let relations, relation literals, append") {
    CHECK(tree("let top = (\n  from employees\n  sort -salary\n  take 10\n)\nfrom top | select {name}") ==
          "(let top (pipeline (from employees) (sort (- salary)) (take 10)))\n"
          "(pipeline (from top) (select (tuple name)))");
    CHECK(
        tree("from [{a = 1, b = \"x\"}, {a = 2, b = \"y\"}] | append (from other)") ==
        "(pipeline (from (array (tuple a=1 b=\"x\") (tuple a=2 b=\"y\"))) (append (pipeline (from other))))");
  }

  TEST_CASE("errors: what was expected, where, with a caret under it") {
    const std::string text = "from t\nfilter (a > 1\n";
    auto unclosed = error_of(text);
    CHECK(unclosed.code == dsl::errc::syntax_error);
    CHECK(unclosed.line == 3);
    CHECK(unclosed.message.find("expected ) to close") != std::string::npos);

    const std::string typo = "from t | select {a,, b}";
    auto d = error_of(typo);
    CHECK(d.line == 1);
    CHECK(d.column == 20);
    CHECK(d.render(typo) ==
          "Error at 1:20: expected a value, a name, or ( { [, found ','\n"
          "  1 | from t | select {a,, b}\n"
          "    |                    ^\n");

    CHECK(error_of("from t | filter name == \"open").code == dsl::errc::unterminated_string);
    CHECK(error_of("from t | take 12abc").code == dsl::errc::invalid_number);
    CHECK(error_of("from t | derive d = @2024-13").code == dsl::errc::invalid_date);
    CHECK(error_of("from t | derive x = a ; b").message.find("unexpected character ';'") !=
          std::string::npos);
    CHECK(error_of("").message.find("a query") != std::string::npos);
    CHECK(error_of("from t | derive $").message.find("$1, $name") != std::string::npos);
    // Raw SQL and the other refused constructs are refused by the parser already.
    auto sql = error_of("from t | derive x = s\"version()\"");
    CHECK(sql.code == dsl::errc::unsupported_construct);
    CHECK(sql.column == 21);
    CHECK(error_of("from t | loop (take 1)").code == dsl::errc::unsupported_construct);
    CHECK(error_of("read_csv \"/etc/passwd\"").code == dsl::errc::unsupported_construct);
    // A user-defined function, in either of PRQL's spellings (it was a mere syntax error).
    auto function = error_of("let f = x -> x + 1\nfrom t | derive y = f 2");
    CHECK(function.code == dsl::errc::unsupported_construct);
    CHECK(function.column == 11);
    CHECK(error_of("from t | derive y = (x -> x)").code == dsl::errc::unsupported_construct);
    // An f-string's interpolation is placed in the whole query.
    auto inner = error_of("from t | derive g = f\"x {a +} y\"");
    CHECK(inner.column == 29);
  }

  TEST_CASE("hostile input: deep nesting refused, random bytes never crash (seeded)") {
    std::string deep = "from t | filter ";
    for (int i = 0; i < 10'000; ++i) deep += '(';
    deep += "x";
    CHECK(error_of(deep).code == dsl::errc::nesting_too_deep);
    std::string tuples = "from t | select ";
    for (int i = 0; i < 10'000; ++i) tuples += '{';
    CHECK(error_of(tuples).code == dsl::errc::nesting_too_deep);
    std::string minus = "from t | derive x = ";
    for (int i = 0; i < 10'000; ++i) minus += "- ";
    minus += "1";
    CHECK(error_of(minus).code == dsl::errc::nesting_too_deep);

    std::mt19937 random(20261204);
    const std::string alphabet = "from t|select{}[]()=,.:$@\"'f#\\\n -+*/%!<>~?&_0123456789azAZ";
    int parsed = 0;
    for (int round = 0; round < 20'000; ++round) {
      std::string text;
      const auto length = random() % 40;
      for (unsigned k = 0; k < length; ++k) text += alphabet[random() % alphabet.size()];
      auto result = dsl::parse(text);
      if (result) {
        ++parsed;
        CHECK(!dsl::ast::to_string(*result).empty());
      } else {
        CHECK(result.error().begin <= text.size());
        CHECK(!result.error().render(text).empty());
      }
    }
    CHECK(parsed > 0);  // the alphabet makes valid queries too, so both paths ran
  }
}
