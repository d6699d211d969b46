#pragma once
// A small HTTP/1.1 server on Boost.Beast: keep-alive, bounded bodies, asynchronous responses.
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

namespace tally::http {

constexpr size_t kRequestBodyBytesMax = size_t{4} * 1024 * 1024;  // above this the connection gets 413 and closes
constexpr size_t kRequestHeaderBytesMax = size_t{16} * 1024;       // request line and headers; above: 414 or 431
constexpr size_t kRequestTargetBytesMax = size_t{8} * 1024;        // the request line's target; above: 414
constexpr int64_t kIdleTimeoutMsDefault = 60000;                   // a connection with no request this long is closed
// When accept fails for lack of file descriptors (or memory), the listener pauses instead of retrying at once
// (which spins a core), doubling from the minimum to the maximum while the failures last.
constexpr int64_t kAcceptBackoffMsMin = 10;
constexpr int64_t kAcceptBackoffMsMax = 1000;
// Bytes each socket read may take. Beast reads max(512, free capacity) and copies body bytes out as it parses,
// so a buffer that is never reserved stays at 512 bytes: a 4.5 KB Stripe event then costs ten reads (and ten
// event-loop polls), where one would do.
constexpr size_t kReadChunkBytes = size_t{16} * 1024;

struct Request {
    std::string method;
    std::string target;  // path and query as sent
    std::string path;    // decoded path, for messages and exact matches of fixed routes
    // The path's segments, each percent-decoded on its own, so an id containing %2F stays one segment.
    std::vector<std::string> segments;
    std::map<std::string, std::string> query;
    std::map<std::string, std::string> headers;  // lowercase names
    std::string body;
    std::string Header(const std::string& lowercase_name) const {
        auto it = headers.find(lowercase_name);
        return it == headers.end() ? std::string() : it->second;
    }
};

struct Response {
    int status = 200;
    std::string body;
    std::string content_type = "application/json";
    std::vector<std::pair<std::string, std::string>> headers;
    /// When set, the body is made by calling it on the connection's I/O thread just before the response is written
    /// (|body| ignored): a large rendering is then not done by the thread that answered, such as the group
    /// committer's. Status and headers are final when the Response is handed over.
    std::function<std::string()> render_body;
};

/// "/v1/customers/cust_1/entitlements" -> {"v1", "customers", "cust_1", "entitlements"} (empty parts dropped).
std::vector<std::string> PathSegments(const std::string& path);

/// Why a request was answered before reaching a handler (the connection then closes): 400, 413, 414 or 431.
struct Refusal {
    int status = 400;
    const char* code = "malformed_request";  // the error code in the JSON body
    std::string message;                     // fixed text: never echoes the request
    const char* param = nullptr;
};

/// Parses one HTTP/1.1 request from |bytes| exactly as a connection does (Beast's parser with the server's limits,
/// then Tally's checks): the Request a handler would see, or the refusal. For tests and fuzzing; thread-safe.
std::variant<Request, Refusal> ParseRequest(std::string_view bytes);

/// Counters the server keeps about itself. Thread-safe (atomics), read by /metrics.
struct ServerStats {
    std::atomic<int64_t> accept_errors{0};
    std::atomic<int64_t> connections_open{0};
    std::atomic<int64_t> malformed_requests{0};
};

struct ServerOptions {
    int64_t idle_timeout_ms = kIdleTimeoutMsDefault;
};

/// Delivers a response; callable once, from any thread.
using Responder = std::function<void(Response)>;
using Handler = std::function<void(Request, Responder)>;

/// Listens on |address|:|port| with |threads| I/O threads. Start/Stop are not thread-safe with each other;
/// the handler is called concurrently from the I/O threads.
class Server {
public:
    Server(std::string address, uint16_t port, int threads, Handler handler, ServerOptions options = {});
    ~Server();
    /// Binds and starts serving; returns an error message on failure (e.g. port in use), empty on success.
    std::string Start();
    /// The bound port (useful with port 0).
    uint16_t port() const;
    /// Stops accepting, waits up to |drain_ms| for requests in flight to be answered, then stops the threads.
    void Stop(int drain_ms);
    int64_t in_flight() const;
    const ServerStats& stats() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace tally::http
