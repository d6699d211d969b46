#include "adapters/http/api.hpp"  // the sandbox sees the HTTP server, never Tally's API
