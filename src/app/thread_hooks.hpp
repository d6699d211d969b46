#pragma once
// How app/'s background threads introduce themselves to the operating system (a name for top -H and perf, a
// lower CPU priority for background work) without app/ making system calls: the wiring installs the adapter's
// functions once, before any thread starts; until then both are no-ops.
namespace tally {

struct ThreadHooks {
    void (*name_current_thread)(const char* name) = nullptr;             // at most 15 characters show
    void (*lower_current_thread_priority)(int nice_increment) = nullptr;  // best effort
};

/// Installs |hooks| for the whole process. Call before threads start (not synchronised with the calls below).
void InstallThreadHooks(ThreadHooks hooks);
void NameCurrentThread(const char* name);
void LowerCurrentThreadPriority(int nice_increment);

}  // namespace tally
