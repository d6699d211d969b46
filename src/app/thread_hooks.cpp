#include "app/thread_hooks.hpp"

namespace tally {
namespace {
ThreadHooks& Hooks() {
    static ThreadHooks hooks;
    return hooks;
}
}  // namespace

void InstallThreadHooks(ThreadHooks hooks) { Hooks() = hooks; }

void NameCurrentThread(const char* name) {
    if (Hooks().name_current_thread != nullptr) Hooks().name_current_thread(name);
}

void LowerCurrentThreadPriority(int nice_increment) {
    if (Hooks().lower_current_thread_priority != nullptr) Hooks().lower_current_thread_priority(nice_increment);
}

}  // namespace tally
