#pragma once
#include <pthread.h>

namespace tally {

/// Names the calling thread (at most 15 characters show), for top -H, perf and debuggers.
inline void SetCurrentThreadName(const char* name) { pthread_setname_np(pthread_self(), name); }

}  // namespace tally
