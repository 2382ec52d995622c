// What values an option accepts, declared with the option itself (a config key or a command
// flag). One Rule both checks a value and names values it must refuse, so the tests can try
// bad values on every option without a list of their own. Header-only: no Boost, no torch
// (shrink-run uses it too).
#pragma once
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "common/shape.h"

namespace shrink {

class Rule {
 public:
  enum class Kind { Integer, Real, Flag, Choice, Text, Numbers, Shape };

  // Whole numbers in [lo, hi].
  static Rule integer(int64_t lo, int64_t hi) { return Rule(Kind::Integer, double(lo), double(hi)); }
  // Finite reals between lo and hi; an open end excludes the bound itself.
  static Rule real(double lo, double hi, bool lo_open = false, bool hi_open = false) {
    Rule r(Kind::Real, lo, hi);
    r.lo_open_ = lo_open, r.hi_open_ = hi_open;
    return r;
  }
  static Rule flag() { return Rule(Kind::Flag, 0, 1); }
  static Rule choice(std::vector<std::string> choices) {
    Rule r(Kind::Choice, 0, 0);
    r.choices_ = std::move(choices);
    return r;
  }
  // Free text (a path, a pattern, a spec): `may_be_empty` false refuses "".
  static Rule text(bool may_be_empty) {
    Rule r(Kind::Text, 0, 0);
    r.may_be_empty_ = may_be_empty;
    return r;
  }
  // A comma-separated list of finite reals in [lo, hi] (empty allowed when may_be_empty).
  static Rule numbers(double lo, double hi, bool may_be_empty, bool whole = false) {
    Rule r(Kind::Numbers, lo, hi);
    r.may_be_empty_ = may_be_empty, r.whole_ = whole;
    return r;
  }

  // A shape like 1,16,16 or 1x16x16 (positive integers); empty allowed when may_be_empty.
  static Rule shape(bool may_be_empty) {
    Rule r(Kind::Shape, 1, 0);
    r.may_be_empty_ = may_be_empty;
    return r;
  }

  Kind kind() const { return kind_; }

  // "" when `value` is acceptable, else what is wrong with it ("must be an integer in [1, 100]").
  std::string problem(const std::string& value) const {
    switch (kind_) {
      case Kind::Integer: {
        int64_t v = 0;
        if (!parse_integer(value, &v) || v < lo_ || v > hi_) return "must be " + describe();
        return "";
      }
      case Kind::Real: {
        double v = 0;
        if (!parse_real(value, &v) || !in_range(v)) return "must be " + describe();
        return "";
      }
      case Kind::Flag:
        for (const char* ok : {"true", "false", "1", "0", "yes", "no", "on", "off"})
          if (value == ok) return "";
        return "must be " + describe();
      case Kind::Choice:
        for (const auto& c : choices_)
          if (value == c) return "";
        return "expected one of " + join(choices_);
      case Kind::Text: return value.empty() && !may_be_empty_ ? "cannot be empty" : "";
      case Kind::Numbers: {
        if (value.empty()) return may_be_empty_ ? "" : "cannot be empty";
        std::stringstream in(value);
        for (std::string part; std::getline(in, part, ',');) {
          double v = 0;
          if (!parse_real(trim(part), &v) || !in_range(v) || (whole_ && v != std::floor(v))) return "must be " + describe();
        }
        if (value.back() == ',') return "must be " + describe();
        return "";
      }
      case Kind::Shape:
        if (value.empty()) return may_be_empty_ ? "" : "cannot be empty";
        try {
          parse_shape(value);
        } catch (const UserError&) {
          return "must be " + describe();
        }
        return "";
    }
    return "";
  }

  // The accepted values in words, for messages and --help.
  std::string describe() const {
    switch (kind_) {
      case Kind::Integer: return "an integer in [" + num(lo_) + ", " + num(hi_) + "]";
      case Kind::Real: return "a number in " + interval();
      case Kind::Flag: return "true or false";
      case Kind::Choice: return "one of " + join(choices_);
      case Kind::Text: return may_be_empty_ ? "any text" : "a non-empty text";
      case Kind::Numbers: return std::string("comma-separated ") + (whole_ ? "whole " : "") + "numbers in " + interval();
      case Kind::Shape: return std::string("a shape like 1,16,16") + (may_be_empty_ ? " (or empty)" : "");
    }
    return "";
  }

  // Values this rule must refuse: not a number, out of range on either side, NaN, empty, ...
  std::vector<std::string> bad_examples() const {
    std::vector<std::string> bad;
    switch (kind_) {
      case Kind::Integer:
        bad = {"abc", "", "1.5", "2x", "99999999999999999999999"};
        if (lo_ > -9e18) bad.push_back(num(lo_ - 1));
        if (hi_ < 9e18) bad.push_back(num(hi_ + 1));
        break;
      case Kind::Real:
        bad = {"abc", "", "nan", "inf", "-inf", "1e999", "0.5x"};
        if (std::isfinite(lo_)) bad.push_back(lo_open_ ? num(lo_) : num(lo_ - 1 - std::abs(lo_)));
        if (std::isfinite(hi_)) bad.push_back(hi_open_ ? num(hi_) : num(hi_ + 1 + std::abs(hi_)));
        break;
      case Kind::Flag: bad = {"maybe", "", "2"}; break;
      case Kind::Choice: bad = {"", "no-such-choice", choices_.empty() ? "x" : choices_[0] + "x"}; break;
      case Kind::Text:
        if (!may_be_empty_) bad = {""};
        break;
      case Kind::Numbers:
        bad = {"abc", "1,,2", "1,", "nan", "0.5,inf"};
        if (!may_be_empty_) bad.push_back("");
        if (std::isfinite(lo_)) bad.push_back(num(lo_ - 1 - std::abs(lo_)));
        if (std::isfinite(hi_)) bad.push_back(num(hi_ + 1 + std::abs(hi_)));
        if (whole_) bad.push_back("1.5");
        break;
      case Kind::Shape:
        bad = {"abc", "1,x,16", "0,16,16", "-1,16,16", "1,,16", "1.5,16,16"};
        if (!may_be_empty_) bad.push_back("");
        break;
    }
    return bad;
  }

  // Strict parsers: the whole text must be the number, and it must fit.
  static bool parse_integer(const std::string& text, int64_t* out) {
    if (text.empty() || std::isspace(static_cast<unsigned char>(text[0]))) return false;
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(text.c_str(), &end, 10);
    if (errno == ERANGE || end != text.c_str() + text.size()) return false;
    *out = v;
    return true;
  }
  static bool parse_real(const std::string& text, double* out) {
    if (text.empty() || std::isspace(static_cast<unsigned char>(text[0]))) return false;
    errno = 0;
    char* end = nullptr;
    double v = std::strtod(text.c_str(), &end);
    if (errno == ERANGE || end != text.c_str() + text.size() || !std::isfinite(v)) return false;
    *out = v;
    return true;
  }

 private:
  Rule(Kind kind, double lo, double hi) : kind_(kind), lo_(lo), hi_(hi) {}

  bool in_range(double v) const { return (lo_open_ ? v > lo_ : v >= lo_) && (hi_open_ ? v < hi_ : v <= hi_); }
  std::string interval() const {
    return std::string(lo_open_ ? "(" : "[") + (std::isfinite(lo_) ? num(lo_) : "-inf") + ", " + (std::isfinite(hi_) ? num(hi_) : "inf") +
           (hi_open_ ? ")" : "]");
  }
  static std::string num(double v) {
    std::ostringstream s;
    s.precision(15);
    s << v;
    return s.str();
  }
  static std::string trim(const std::string& s) {
    size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
    return a == std::string::npos ? "" : s.substr(a, b - a + 1);
  }
  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  }

  Kind kind_;
  double lo_, hi_;
  bool lo_open_ = false, hi_open_ = false, may_be_empty_ = true, whole_ = false;
  std::vector<std::string> choices_;
};

}  // namespace shrink
