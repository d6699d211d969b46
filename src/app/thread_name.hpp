#pragma once
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace tally {

/// Names the calling thread (at most 15 characters show), for top -H, perf and debuggers.
inline void SetCurrentThreadName(const char* name) { pthread_setname_np(pthread_self(), name); }

/// Lowers the calling thread's CPU priority by |nice_increment| (Linux: priorities are per thread). Background
/// work (applying webhook events) then yields the CPU to acknowledging deliveries when both want it, and runs at
/// full speed when the CPU is free. Best effort: ignored where not permitted.
inline void LowerCurrentThreadPriority(int nice_increment) {
    const auto tid = static_cast<id_t>(syscall(SYS_gettid));
    (void)setpriority(PRIO_PROCESS, tid, getpriority(PRIO_PROCESS, tid) + nice_increment);
}

}  // namespace tally
