#pragma once
// Group commit of the app's writes on the hot path (recorded usage checks, POST /v1/usage, credit deductions and
// holds): the writes that arrive while one commit is in flight run together in the next transaction and become
// durable with one commit. Each caller is answered after that commit (acknowledged means durable), and one
// caller's refusal undoes only its own write: a write that may fail after writing runs in a savepoint of its own;
// one that decides before it writes (savepoint = false), and the writes of one WriteBatch, need none.
#include <memory>
#include <string>
#include <vector>

#include "app/group_commit.hpp"
#include "app/store.hpp"

namespace tally {

constexpr size_t kWriteGroupMax = 512;          // writes one transaction takes at most
constexpr size_t kWriteGroupQueueMax = 65536;   // writes waiting; past it, kUnavailable (back-pressure)

/// One write's input and answer when it runs in a WriteBatch: a type of that batch's own.
struct BatchedWriteItem {
    virtual ~BatchedWriteItem() = default;
};

/// A kind of write whose writes in one group run together, in one call, instead of one |run| each: what they share
/// (a customer's grants, their statements) is read and written once. A batch decides every item's refusal before it
/// writes anything for that item, so none needs a savepoint.
class WriteBatch {
public:
    virtual ~WriteBatch() = default;
    /// Runs |items| (the group's writes of this batch, in the order they arrived) in |tx| and puts each item's own
    /// refusal, or ok, in |refusals| (as many as |items|). An error is the store's failure and fails the whole group.
    /// It may run more than once (a PostgreSQL serialization retry runs the whole group again), so each item's
    /// answer is where the last run puts it.
    virtual Status Run(StoreTx& tx, const std::vector<BatchedWriteItem*>& items, std::vector<Status>& refusals) const = 0;
};

/// A WriteBatch whose items are all |Item| (a BatchedWriteItem with an |out| holding a Result once run), run by
/// |Owner|'s member |kRun| (Status(StoreTx&, const std::vector<Item*>&)), which fills each item's |out|: a failed
/// |out| is the item's refusal.
template <typename Item, typename Owner, Status (Owner::*kRun)(StoreTx&, const std::vector<Item*>&)>
class ItemWriteBatch final : public WriteBatch {
public:
    explicit ItemWriteBatch(Owner& owner) : owner_(owner) {}
    Status Run(StoreTx& tx, const std::vector<BatchedWriteItem*>& items, std::vector<Status>& refusals) const override {
        std::vector<Item*> typed;
        typed.reserve(items.size());
        for (BatchedWriteItem* item : items) typed.push_back(static_cast<Item*>(item));
        TALLY_TRY((owner_.*kRun)(tx, typed));
        for (size_t i = 0; i < typed.size(); ++i) {
            const auto& out = *typed[i]->out;
            refusals[i] = out.ok() ? Status{} : Status(out.error());
        }
        return {};
    }

private:
    Owner& owner_;
};

/// One caller's write.
struct GroupedWrite {
    /// Serialisation keys (Store::WriteSerialized): writers of one hot row queue for it on every node.
    std::vector<std::string> keys;
    /// The write, inside a savepoint of the group's transaction. It may run more than once (a PostgreSQL
    /// serialization retry runs the whole group again), so it must leave its answer where the last run puts it.
    std::function<Status(StoreTx&)> run;
    /// false for a write that decides every refusal before it writes anything (it reads, decides, then writes) and
    /// reports refusals through its own answer, so |run| fails only when the store does: it then runs without a
    /// savepoint of its own, which spares the store journaling the pages it changes, and its error fails the
    /// whole group.
    bool savepoint = true;
    /// With |batch|, the write is |item| of that batch (|run| and |savepoint| are unused): the group's writes of
    /// one batch run in one call of it, where the first of them arrived.
    const WriteBatch* batch = nullptr;
    std::shared_ptr<BatchedWriteItem> item;
};

/// What became of one write once its group committed: ok, or its own refusal (its savepoint undone, the rest of the
/// group committed). Done gets the commit's error instead when the group failed (nothing of it acknowledged).
struct GroupedWriteOutcome {
    Status status;
};
using WriteGroupCommitter = GroupCommitter<GroupedWrite, GroupedWriteOutcome>;

/// Whether |e| is the store's failure (kUnavailable, kInternal), which fails the whole group, rather than one
/// write's own refusal.
inline bool IsStoreFailure(const Error& e) {
    return e.code == ErrorCode::kUnavailable || e.code == ErrorCode::kInternal;
}

/// The sink of a WriteGroupCommitter: one Store::WriteSerialized transaction over every write's keys. A store
/// failure (kUnavailable, kInternal) inside a write fails the whole group.
WriteGroupCommitter::Sink WriteGroupSink(Store& store);

}  // namespace tally
