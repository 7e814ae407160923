// Warp shuffles, votes and __syncwarp as emulated warp collectives.
#include <cstring>

#include "dlkern/error.h"
#include "emu/device_functions.h"

namespace dlkern::emu::detail {
namespace {

using ::dlkern::detail::concat;

// What a lane reads from a lane that takes no part (exited, or outside the
// mask): undefined on the GPU, all ones here (NaN for floats, -1 for ints).
constexpr uint64_t kPoison = ~uint64_t{0};

// The PTX ISA's shfl.sync: CUDA passes c = ((32 - width) << 8) | clamp, with
// clamp 0 for .up and 31 otherwise; segmask = c[12:8] splits the warp into
// segments of `width` lanes.
template <ShuffleMode mode>
void resolve_shuffle(void* const* payloads) {
  int width = 0;
  for (int i = 0; i < 32; ++i) {
    if (!payloads[i]) continue;
    const int w = static_cast<const ShuffleLane*>(payloads[i])->width;
    if (width && w != width)
      throw Error(concat("lanes of one shuffle passed different widths (", width, " and ", w, ")"));
    width = w;
  }
  const int segmask = (32 - width) & 31;
  const int clamp = mode == ShuffleMode::up ? 0 : 31;
  for (int lane = 0; lane < 32; ++lane) {
    if (!payloads[lane]) continue;
    ShuffleLane& me = *static_cast<ShuffleLane*>(payloads[lane]);
    const int b = me.lane_arg & 31;
    const int max_lane = (lane & segmask) | (clamp & ~segmask);
    const int min_lane = lane & segmask;
    int j = lane;
    bool in_range = false;
    switch (mode) {
      case ShuffleMode::up: j = lane - b; in_range = j >= max_lane; break;
      case ShuffleMode::down: j = lane + b; in_range = j <= max_lane; break;
      case ShuffleMode::bfly: j = lane ^ b; in_range = j <= max_lane; break;
      case ShuffleMode::idx: j = min_lane | (b & ~segmask); in_range = j <= max_lane; break;
    }
    if (!in_range) j = lane;
    me.result = payloads[j] ? static_cast<const ShuffleLane*>(payloads[j])->value : kPoison;
  }
}

struct VoteLane {
  int predicate;
  unsigned result;
};

template <VoteKind kind>
void resolve_vote(void* const* payloads) {
  unsigned ballot = 0, members = 0;
  for (int i = 0; i < 32; ++i) {
    if (!payloads[i]) continue;
    members |= 1u << i;
    if (static_cast<const VoteLane*>(payloads[i])->predicate) ballot |= 1u << i;
  }
  unsigned result = ballot;
  if (kind == VoteKind::any) result = ballot != 0;
  if (kind == VoteKind::all) result = ballot == members;
  for (int i = 0; i < 32; ++i)
    if (payloads[i]) static_cast<VoteLane*>(payloads[i])->result = result;
}

void resolve_nothing(void* const*) {}

const WarpOp kShuffleOps[4] = {
    {"__shfl_sync", false, resolve_shuffle<ShuffleMode::idx>},
    {"__shfl_up_sync", false, resolve_shuffle<ShuffleMode::up>},
    {"__shfl_down_sync", false, resolve_shuffle<ShuffleMode::down>},
    {"__shfl_xor_sync", false, resolve_shuffle<ShuffleMode::bfly>},
};
const WarpOp kVoteOps[3] = {
    {"__ballot_sync", false, resolve_vote<VoteKind::ballot>},
    {"__any_sync", false, resolve_vote<VoteKind::any>},
    {"__all_sync", false, resolve_vote<VoteKind::all>},
};
const WarpOp kSyncWarp = {"__syncwarp", false, resolve_nothing};

}  // namespace

void shuffle(ShuffleMode mode, unsigned mask, ShuffleLane& lane, const Site& site) {
  const WarpOp& op = kShuffleOps[static_cast<int>(mode)];
  if (lane.width < 1 || lane.width > 32 || (lane.width & (lane.width - 1)))
    throw Error(concat(op.name, describe_site(site),
                       ": width must be a power of two from 1 to 32, got ", lane.width));
  warp_collective(op, mask, &lane, site);
}

unsigned vote(VoteKind kind, unsigned mask, int predicate, const Site& site) {
  VoteLane lane{predicate, 0};
  warp_collective(kVoteOps[static_cast<int>(kind)], mask, &lane, site);
  return lane.result;
}

void sync_warp(unsigned mask, const Site& site) { warp_collective(kSyncWarp, mask, nullptr, site); }

}  // namespace dlkern::emu::detail
