#pragma once
// Precompiled header for the HTTP target: Beast, Asio and Boost.JSON dominate its compile time.
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <boost/url.hpp>
