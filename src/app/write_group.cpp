#include "app/write_group.hpp"

#include <algorithm>

namespace tally {

WriteGroupCommitter::Sink WriteGroupSink(Store& store) {
    return [&store](const std::vector<GroupedWrite>& group) -> Result<std::vector<GroupedWriteOutcome>> {
        std::vector<std::string> keys;
        for (const auto& w : group) keys.insert(keys.end(), w.keys.begin(), w.keys.end());
        std::vector<GroupedWriteOutcome> results;
        TALLY_TRY(store.WriteSerialized(keys, [&](StoreTx& tx) -> Status {
            results.assign(group.size(), GroupedWriteOutcome{});
            // Each batch's writes, in arrival order; the batch runs where its first write is.
            std::vector<std::pair<const WriteBatch*, std::vector<size_t>>> batches;
            for (size_t i = 0; i < group.size(); ++i) {
                if (group[i].batch == nullptr) continue;
                auto it = std::find_if(batches.begin(), batches.end(),
                                       [&](const auto& b) { return b.first == group[i].batch; });
                if (it == batches.end()) it = batches.insert(batches.end(), {group[i].batch, {}});
                it->second.push_back(i);
            }
            for (size_t i = 0; i < group.size(); ++i) {
                if (group[i].batch != nullptr) {
                    auto it = std::find_if(batches.begin(), batches.end(),
                                           [&](const auto& b) { return b.first == group[i].batch; });
                    if (it->second.front() != i) continue;  // ran with the first
                    std::vector<BatchedWriteItem*> items;
                    items.reserve(it->second.size());
                    for (size_t k : it->second) items.push_back(group[k].item.get());
                    std::vector<Status> refusals(items.size());
                    TALLY_TRY(it->first->Run(tx, items, refusals));
                    for (size_t k = 0; k < items.size(); ++k) results[it->second[k]].status = std::move(refusals[k]);
                    continue;
                }
                if (!group[i].savepoint) {
                    TALLY_TRY(group[i].run(tx));
                    continue;
                }
                TALLY_TRY(tx.Savepoint());
                Status s = group[i].run(tx);
                if (!s.ok()) {
                    if (IsStoreFailure(s.error())) return s;
                    TALLY_TRY(tx.RollbackToSavepoint());
                    results[i].status = s;
                }
                TALLY_TRY(tx.ReleaseSavepoint());
            }
            return {};
        }));
        return results;
    };
}

}  // namespace tally
