#include "adapters/sqlite/sqlite_store.hpp"  // app/ must not see adapters/
