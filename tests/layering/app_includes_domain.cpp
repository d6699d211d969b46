#include "domain/money.hpp"  // control: an allowed include compiles
