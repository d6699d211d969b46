#include "app/store.hpp"  // domain/ must not see app/
