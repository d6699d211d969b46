#include "adapters/http/server.hpp"  // the SQLite adapter must not see the HTTP adapter
