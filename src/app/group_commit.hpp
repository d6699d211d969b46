#pragma once
// Group commit: many callers' items are written by one thread in one durable transaction, so the
// cost of an fsync is shared by every item in the batch. Used by the webhook inbox; the credit
// ledger will use it the same way.
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "app/thread_hooks.hpp"
#include "domain/result.hpp"

namespace tally {

/// A queue drained by one writer thread in batches of at most |batch_max| items. Submit is thread-safe.
/// Completion callbacks run on the writer thread and must not block. Stop() drains what was submitted.
template <typename Item, typename Out>
class GroupCommitter {
public:
    /// Writes a batch; returns one Out per item, or an error that fails the whole batch.
    using Sink = std::function<Result<std::vector<Out>>(const std::vector<Item>&)>;
    using Done = std::function<void(Result<Out>)>;

    GroupCommitter(Sink sink, size_t batch_max, size_t queue_length_max)
        : sink_(std::move(sink)), batch_max_(batch_max), queue_length_max_(queue_length_max),
          thread_([this] {
              NameCurrentThread("tally-commit");
              Run();
          }) {}
    ~GroupCommitter() { Stop(); }
    GroupCommitter(const GroupCommitter&) = delete;
    GroupCommitter& operator=(const GroupCommitter&) = delete;

    /// Queues |item|; |done| is called once it is durable or failed. kUnavailable at once when the queue
    /// is full (back-pressure) or the committer is stopping.
    void Submit(Item item, Done done) {
        {
            std::lock_guard lock(mu_);
            if (!stopping_ && queue_.size() < queue_length_max_) {
                queue_.emplace_back(std::move(item), std::move(done));
                cv_.notify_one();
                return;
            }
        }
        done(Unavailable("write queue is full; retry later"));
    }

    /// Drains the queue, then joins the writer thread. Idempotent.
    void Stop() {
        {
            std::lock_guard lock(mu_);
            stopping_ = true;
            cv_.notify_one();
        }
        if (thread_.joinable()) thread_.join();
    }

    /// Items waiting for, or in, a commit right now.
    size_t backlog() const {
        std::lock_guard lock(mu_);
        return queue_.size() + in_commit_;
    }

private:
    void Run() {
        std::vector<Item> items;
        std::vector<Done> dones;
        for (;;) {
            {
                std::unique_lock lock(mu_);
                cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
                if (queue_.empty()) return;  // stopping and drained
                while (!queue_.empty() && items.size() < batch_max_) {
                    items.push_back(std::move(queue_.front().first));
                    dones.push_back(std::move(queue_.front().second));
                    queue_.pop_front();
                }
                in_commit_ = items.size();
            }
            // Nothing thrown below may end this thread: callers would wait forever. A throwing sink fails its batch
            // (its transaction rolled back by the store), a throwing callback only itself.
            Result<std::vector<Out>> result = Internal("group commit sink threw");
            try {
                result = sink_(items);
            } catch (...) {
                result = Internal("group commit sink threw an exception");
            }
            for (size_t i = 0; i < dones.size(); ++i) {
                try {
                    if (!result.ok()) {
                        dones[i](result.error());
                    } else if (result->size() != items.size()) {
                        dones[i](Internal("group commit sink returned a wrong count"));
                    } else {
                        dones[i](Result<Out>(static_cast<Out>((*result)[i])));
                    }
                } catch (...) {  // NOLINT(bugprone-empty-catch): the callback's own failure; the batch goes on
                }
            }
            items.clear();
            dones.clear();
            {
                std::lock_guard lock(mu_);
                in_commit_ = 0;
            }
        }
    }

    Sink sink_;
    const size_t batch_max_;
    const size_t queue_length_max_;
    mutable std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::pair<Item, Done>> queue_;
    bool stopping_ = false;
    size_t in_commit_ = 0;
    std::thread thread_;
};

}  // namespace tally
