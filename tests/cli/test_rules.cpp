// Rules: what a value must be, and the bad values the option tests try.
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>

#include "common/rule.h"

using shrink::Rule;

CATCH_TEST_CASE("rules: strict numbers, ranges, choices, lists, shapes", "[rules]") {
  CATCH_CHECK(Rule::integer(1, 10).problem("3").empty());
  for (const char* bad : {"0", "11", "3.0", " 3", "3 ", "0x3", "", "abc", "99999999999999999999"}) CATCH_CHECK_FALSE(Rule::integer(1, 10).problem(bad).empty());
  CATCH_CHECK(Rule::integer(1, 10).problem("0") == "must be an integer in [1, 10]");
  CATCH_CHECK(Rule::real(0, 1, true, false).problem("1").empty());
  CATCH_CHECK(Rule::real(0, 1, true, false).problem("1e-3").empty());
  for (const char* bad : {"0", "1.0001", "nan", "inf", "1e999", "", "-0.5", "0.5 "}) CATCH_CHECK_FALSE(Rule::real(0, 1, true, false).problem(bad).empty());
  CATCH_CHECK(Rule::real(0, 1, true, false).problem("0") == "must be a number in (0, 1]");
  CATCH_CHECK(Rule::choice({"a", "b"}).problem("b").empty());
  CATCH_CHECK(Rule::choice({"a", "b"}).problem("c") == "expected one of a, b");
  CATCH_CHECK(Rule::flag().problem("true").empty());
  CATCH_CHECK_FALSE(Rule::flag().problem("maybe").empty());
  CATCH_CHECK(Rule::text(true).problem("").empty());
  CATCH_CHECK(Rule::text(false).problem("") == "cannot be empty");
  CATCH_CHECK(Rule::numbers(0, 1, true).problem("").empty());
  CATCH_CHECK(Rule::numbers(0, 1, true).problem("0.5, 0.25").empty());
  CATCH_CHECK_FALSE(Rule::numbers(0, 1, false).problem("").empty());
  CATCH_CHECK_FALSE(Rule::numbers(0, 9, true, true).problem("1,2.5").empty());
  CATCH_CHECK(Rule::shape(true).problem("1x16x16").empty());
  CATCH_CHECK(Rule::shape(true).problem("3,32,32").empty());
  CATCH_CHECK_FALSE(Rule::shape(false).problem("1,0,16").empty());
}

CATCH_TEST_CASE("rules refuse every bad example they name, and accept their own bounds", "[rules]") {
  for (const Rule& r : {Rule::integer(0, 5), Rule::integer(-3, 3), Rule::real(-1, 1), Rule::real(0, 1, true, true), Rule::flag(), Rule::text(false),
                        Rule::choice({"x", "y"}), Rule::numbers(0, 9, false, true), Rule::numbers(-1, 1, true), Rule::shape(false)}) {
    CATCH_INFO(r.describe());
    CATCH_CHECK_FALSE(r.bad_examples().empty());
    for (const auto& bad : r.bad_examples()) CATCH_CHECK_FALSE(r.problem(bad).empty());
  }
  CATCH_CHECK(Rule::integer(0, 5).problem("0").empty());
  CATCH_CHECK(Rule::integer(0, 5).problem("5").empty());
  CATCH_CHECK(Rule::real(-1, 1).problem("-1").empty());
  CATCH_CHECK(Rule::real(-1, 1).problem("1").empty());
}
