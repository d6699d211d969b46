#pragma once
// Linux thread naming and per-thread CPU priority: the implementation of app/thread_hooks.hpp.
#include "app/thread_hooks.hpp"

namespace tally {

/// Names the calling thread (pthread_setname_np; at most 15 characters show).
void SystemNameCurrentThread(const char* name);
/// Lowers the calling thread's CPU priority by |nice_increment| (Linux priorities are per thread). Best effort:
/// ignored where not permitted.
void SystemLowerCurrentThreadPriority(int nice_increment);
/// The hooks above, for InstallThreadHooks.
inline ThreadHooks SystemThreadHooks() { return ThreadHooks{SystemNameCurrentThread, SystemLowerCurrentThreadPriority}; }

}  // namespace tally
