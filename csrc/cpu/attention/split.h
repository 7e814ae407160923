// Split-KV decoding's rule (attention.cpp), apart so that the tests can ask
// which path a problem takes.
#pragma once

#include <cstdint>

#include "dlkern/attention.h"

namespace dlkern::cpu::attention {

// Keys per chunk when the forward splits each key/value head's keys across
// threads (split-KV), 0 when it does not. It splits when the query rows of a
// key/value head (L times the GQA group) are at most kFewRows and there is
// more than one block of keys: a thread then takes all the rows of a group
// against one chunk of keys, so that K and V are streamed once. The chunk
// (a whole number of key blocks) depends on the problem alone, never on the
// thread count: about kSplitItems chunks over all key/value heads, none
// shorter than a key block.
int64_t split_kv_chunk(const AttentionParams& p);

}  // namespace dlkern::cpu::attention
