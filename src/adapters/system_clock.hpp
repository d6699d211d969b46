#pragma once
#include <chrono>

#include "app/ports.hpp"

namespace tally {

/// The wall clock, UTC seconds. Thread-safe.
class SystemClock final : public Clock {
public:
    Timestamp Now() const override {
        return Timestamp(std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count());
    }
    int64_t NowMs() const override {
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    }
};

}  // namespace tally
