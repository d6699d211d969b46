// The disk's own latency floor for durable group commit, measured in the same benchmark run as Tally.
//
// An ideal server with no CPU cost: requests arrive evenly at RATE per second for SECONDS; one writer loop takes
// every request that has arrived, appends BYTES per request to a file, fdatasyncs it, and acknowledges them all.
// A request's latency is its acknowledgement time minus its arrival time. Whatever p99 this prints, no server
// that acknowledges only after fsync can beat it on this disk at this moment: a fsync that stalls for 40 ms
// delays every request that arrives meanwhile.
//
// Usage: disk_floor DIR RATE SECONDS [BYTES=7000]
// Prints: FLOOR requests=N commits=N p50_us=N p99_us=N max_us=N over10ms_permille=N fsync_p99_us=N fsync_max_us=N
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: disk_floor DIR RATE SECONDS [BYTES]\n");
        return 2;
    }
    const std::string path = std::string(argv[1]) + "/disk_floor.dat";
    const double rate = std::atof(argv[2]);
    const double seconds = std::atof(argv[3]);
    const size_t bytes_per_request = argc > 4 ? static_cast<size_t>(std::atol(argv[4])) : 7000;
    if (rate <= 0 || seconds <= 0) return 2;
    const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0) {
        std::perror("open");
        return 1;
    }
    using Clock = std::chrono::steady_clock;
    auto us_since = [](Clock::time_point a, Clock::time_point b) {
        return std::chrono::duration_cast<std::chrono::microseconds>(b - a).count();
    };
    const auto total = static_cast<int64_t>(rate * seconds);
    const double interval_us = 1e6 / rate;
    std::vector<char> buffer;
    std::vector<int64_t> latency_us;
    std::vector<int64_t> fsync_us;
    latency_us.reserve(static_cast<size_t>(total));
    off_t offset = 0;
    const auto start = Clock::now();
    int64_t next = 0;  // first request not yet acknowledged
    while (next < total) {
        const int64_t now_us = us_since(start, Clock::now());
        auto arrived = static_cast<int64_t>(static_cast<double>(now_us) / interval_us) + 1;  // arrivals at 0, i, 2i...
        arrived = std::min(arrived, total);
        if (arrived <= next) {
            std::this_thread::sleep_for(
                std::chrono::microseconds(static_cast<int64_t>(static_cast<double>(next) * interval_us) - now_us + 1));
            continue;
        }
        const size_t n = static_cast<size_t>(arrived - next);
        buffer.assign(n * bytes_per_request, 'x');
        const auto before = Clock::now();
        if (::pwrite(fd, buffer.data(), buffer.size(), offset) != static_cast<ssize_t>(buffer.size()) ||
            ::fdatasync(fd) != 0) {
            std::perror("write");
            return 1;
        }
        const auto after = Clock::now();
        offset += static_cast<off_t>(buffer.size());
        fsync_us.push_back(us_since(before, after));
        const int64_t done_us = us_since(start, after);
        for (int64_t i = next; i < arrived; ++i) {
            latency_us.push_back(done_us - static_cast<int64_t>(static_cast<double>(i) * interval_us));
        }
        next = arrived;
    }
    ::close(fd);
    ::unlink(path.c_str());
    auto pct = [](std::vector<int64_t> v, double p) {
        std::sort(v.begin(), v.end());
        return v.empty() ? 0 : v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
    };
    const auto over = std::count_if(latency_us.begin(), latency_us.end(), [](int64_t v) { return v > 10000; });
    std::printf(
        "FLOOR requests=%zu commits=%zu p50_us=%lld p99_us=%lld max_us=%lld over10ms_permille=%lld "
        "fsync_p99_us=%lld fsync_max_us=%lld\n",
        latency_us.size(), fsync_us.size(), static_cast<long long>(pct(latency_us, 0.50)),
        static_cast<long long>(pct(latency_us, 0.99)), static_cast<long long>(pct(latency_us, 1.0)),
        static_cast<long long>(over * 1000 / static_cast<int64_t>(std::max<size_t>(1, latency_us.size()))),
        static_cast<long long>(pct(fsync_us, 0.99)), static_cast<long long>(pct(fsync_us, 1.0)));
    return 0;
}
