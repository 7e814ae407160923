// Shapes in error messages, written as Python writes tuples: (2, 3), (5,), ().
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dlkern {

inline std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "(";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

}  // namespace dlkern
