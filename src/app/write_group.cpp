#include "app/write_group.hpp"

namespace tally {

WriteGroupCommitter::Sink WriteGroupSink(Store& store) {
    return [&store](const std::vector<GroupedWrite>& group) -> Result<std::vector<GroupedWriteOutcome>> {
        std::vector<std::string> keys;
        for (const auto& w : group) keys.insert(keys.end(), w.keys.begin(), w.keys.end());
        std::vector<GroupedWriteOutcome> results;
        TALLY_TRY(store.WriteSerialized(keys, [&](StoreTx& tx) -> Status {
            results.assign(group.size(), GroupedWriteOutcome{});
            for (size_t i = 0; i < group.size(); ++i) {
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
