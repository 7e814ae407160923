// The forest's schedule on the device for one call (host side): the
// children, the depth order and the level offsets of dlkern::tree_levels,
// and for the backward the scatter groups, uploaded in one copy.
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "cuda/launch.cuh"
#include "cuda/tree/levels.cuh"
#include "dlkern/tree.h"

namespace dlkern::cuda::tree {

// Level l's row count, from the host schedule.
inline int64_t level_rows(const TreeForest& f, int64_t l) {
  return f.level_offset[l + 1] - f.level_offset[l];
}

// The scatter groups: per level, the children that its nodes' present slots
// name, each once, in increasing node order (group_child), and for each the
// slots that add into it (slot, entries r * arity + k of the level's rows)
// in row order then slot order, the CPU's order of additions
// (group_start[g] .. group_start[g + 1]). Level l's groups are
// level_group[l] .. level_group[l + 1].
struct Groups {
  std::vector<int64_t> child, start, slot, level;
};

inline Groups scatter_groups(const TreeForest& f) {
  Groups g;
  g.level.push_back(0);
  g.start.push_back(0);
  std::vector<std::pair<int64_t, int64_t>> slots;  // (child, slot)
  for (int64_t l = 0; l < f.n_levels; ++l) {
    slots.clear();
    const int64_t* nodes = f.order + f.level_offset[l];
    for (int64_t r = 0; r < level_rows(f, l); ++r)
      for (int64_t k = 0; k < f.arity; ++k) {
        const int64_t c = f.children[(nodes[r] - f.n_leaves) * f.arity + k];
        if (c >= 0) slots.emplace_back(c, r * f.arity + k);
      }
    std::sort(slots.begin(), slots.end());  // slots of one child stay in (r, k) order
    for (size_t s = 0; s < slots.size(); ++s) {
      if (s == 0 || slots[s].first != slots[s - 1].first) {
        if (s > 0) g.start.push_back(static_cast<int64_t>(g.slot.size()));
        g.child.push_back(slots[s].first);
      }
      g.slot.push_back(slots[s].second);
    }
    if (!slots.empty()) g.start.push_back(static_cast<int64_t>(g.slot.size()));
    g.level.push_back(static_cast<int64_t>(g.child.size()));
  }
  return g;
}

class DeviceForest {
 public:
  // with_groups: the backward's scatter groups too.
  DeviceForest(const TreeForest& f, bool with_groups, cudaStream_t stream)
      : groups(with_groups ? scatter_groups(f) : Groups{}),
        host_(pack(f)),
        buf_(sizeof(int64_t) * host_.size(), stream) {
    // From pageable memory: the call returns once host_ has been copied out.
    DLKERN_CUDA_CHECK(cudaMemcpyAsync(buf_.get<int64_t>(), host_.data(),
                                      sizeof(int64_t) * host_.size(), cudaMemcpyHostToDevice,
                                      stream));
    const int64_t* p = buf_.get<const int64_t>();
    args = {p, p + f.n_internal * f.arity, p + f.n_internal * (f.arity + 1), f.n_leaves,
            f.arity};
    p = args.level_offset + f.n_levels + 1;
    scatter.child = p;
    scatter.start = scatter.child + groups.child.size();
    scatter.slot = scatter.start + groups.start.size();
    scatter.level = scatter.slot + groups.slot.size();
  }

  const Groups groups;  // host copies (the level ranges are read on the host)
  Forest args;          // children, order, level_offset on the device
  Scatter scatter;      // the groups on the device

 private:
  std::vector<int64_t> pack(const TreeForest& f) const {
    std::vector<int64_t> h(f.children, f.children + f.n_internal * f.arity);
    h.insert(h.end(), f.order, f.order + f.n_internal);
    h.insert(h.end(), f.level_offset, f.level_offset + f.n_levels + 1);
    for (const auto* v : {&groups.child, &groups.start, &groups.slot, &groups.level})
      h.insert(h.end(), v->begin(), v->end());
    return h;
  }

  const std::vector<int64_t> host_;
  Scratch buf_;
};

}  // namespace dlkern::cuda::tree
