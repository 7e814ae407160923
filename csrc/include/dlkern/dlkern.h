// Everything in dlkern's C++ API.
#pragma once

#include "dlkern/attention.h"
#include "dlkern/config.h"
#include "dlkern/conv.h"
#include "dlkern/error.h"
#include "dlkern/gmm.h"
#include "dlkern/matmul.h"
#include "dlkern/pool.h"
#include "dlkern/rnn.h"
#include "dlkern/tree.h"
#include "dlkern/types.h"
