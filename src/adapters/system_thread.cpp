#include "adapters/system_thread.hpp"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace tally {

void SystemNameCurrentThread(const char* name) { pthread_setname_np(pthread_self(), name); }

void SystemLowerCurrentThreadPriority(int nice_increment) {
    const auto tid = static_cast<id_t>(syscall(SYS_gettid));
    (void)setpriority(PRIO_PROCESS, tid, getpriority(PRIO_PROCESS, tid) + nice_increment);
}

}  // namespace tally
