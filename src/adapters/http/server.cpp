#include "adapters/http/server.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <pthread.h>

#include <algorithm>
#include <optional>
#include <variant>
#include <cctype>
#include <chrono>

namespace tally::http {
namespace {

/// The answer when a handler or a rendering throws (Stripe's shape for an internal error).
constexpr const char* kInternalErrorBody =
    R"({"error":{"type":"api_error","code":"internal_error","message":"An internal error occurred.","param":null}})";

namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

std::string ErrorJson(const char* code, const std::string& message, const char* param) {
    // Fixed ASCII text only: nothing the client sent is echoed here.
    std::string out = R"({"error":{"type":"invalid_request_error","code":")";
    out += code;
    out += R"(","message":")" + message + R"(","param":)";
    out += param ? std::string("\"") + param + "\"" : std::string("null");
    out += "}}";
    return out;
}

std::string PercentDecode(std::string_view s, bool plus_is_space) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) && std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
            const auto hex = [](char c) { return std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (c | 0x20) - 'a' + 10; };
            out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
            i += 2;
        } else {
            out += (plus_is_space && s[i] == '+') ? ' ' : s[i];
        }
    }
    return out;
}

/// Splits the raw path into segments and decodes each one alone: "/v1/customers/a%2Fb" has three segments, the
/// last "a/b", not four.
void ParsePath(std::string_view raw_path, Request& req) {
    req.path = PercentDecode(raw_path, false);
    for (const std::string& raw : PathSegments(std::string(raw_path))) req.segments.push_back(PercentDecode(raw, false));
}

void ParseQuery(std::string_view query, Request& req) {
    while (!query.empty()) {
        const size_t amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        const size_t eq = pair.find('=');
        if (!pair.empty()) {
            req.query[PercentDecode(pair.substr(0, eq), true)] =
                eq == std::string_view::npos ? std::string() : PercentDecode(pair.substr(eq + 1), true);
        }
        if (amp == std::string_view::npos) break;
        query = query.substr(amp + 1);
    }
}

/// Whether |s| holds a byte no request line or header may carry raw: NUL, other controls but tab, DEL.
bool HasForbiddenByte(std::string_view s, bool allow_tab) {
    for (char c : s) {
        const auto u = static_cast<unsigned char>(c);
        if ((u < 0x20 && !(allow_tab && u == '\t')) || u == 0x7f) return true;
    }
    return false;
}

/// The refusal for a Beast parse error, given the bytes read so far; nullopt for errors that are not the client's
/// request (a reset connection): those close without an answer.
std::optional<Refusal> RefusalForParseError(beast::error_code ec, std::string_view seen) {
    if (ec == bhttp::error::body_limit) return Refusal{413, "payload_too_large", "request body exceeds the server limit", "body"};
    if (ec == bhttp::error::header_limit) {
        // Over the limit before the request line ended: the target is too long (414); else the headers (431).
        if (seen.find("\r\n") == std::string_view::npos) {
            return Refusal{414, "uri_too_long", "the request line exceeds the server limit", nullptr};
        }
        return Refusal{431, "request_header_fields_too_large", "the request headers exceed the server limit", nullptr};
    }
    // Not HTTP/1.1 as RFC 9112 spells it (a raw space or NUL in the target, a bad header, ...): say so instead of
    // dropping the connection.
    if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category()) {
        return Refusal{400, "malformed_request", "the request is not valid HTTP/1.1", nullptr};
    }
    return std::nullopt;
}

/// Tally's checks on a parsed message, and the Request handlers see; a refusal when a check fails.
std::optional<Refusal> BuildRequest(bhttp::request<bhttp::string_body>& msg, Request& req) {
    if (msg.target().size() > kRequestTargetBytesMax) {
        return Refusal{414, "uri_too_long", "the request target exceeds the server limit", nullptr};
    }
    if (HasForbiddenByte(msg.target(), false) || msg.target().find(' ') != beast::string_view::npos) {
        return Refusal{400, "malformed_request", "the request target holds a control character or a space", nullptr};
    }
    // Beast's own header limit depends on how the bytes arrived; this one is exact.
    size_t header_bytes = msg.method_string().size() + msg.target().size() + 11;  // "<m> <t> HTTP/1.1\r\n"
    for (const auto& field : msg) header_bytes += field.name_string().size() + field.value().size() + 4;
    if (header_bytes > kRequestHeaderBytesMax) {
        return Refusal{431, "request_header_fields_too_large", "the request headers exceed the server limit", nullptr};
    }
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    const size_t q = req.target.find('?');
    ParsePath(std::string_view(req.target).substr(0, q), req);
    if (q != std::string::npos) ParseQuery(std::string_view(req.target).substr(q + 1), req);
    for (const auto& field : msg) {
        if (HasForbiddenByte(field.name_string(), false) || HasForbiddenByte(field.value(), true)) {
            return Refusal{400, "malformed_request", "a header holds a control character", nullptr};
        }
        std::string name(field.name_string());
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        req.headers[name] = std::string(field.value());
    }
    req.body = std::move(msg.body());
    return std::nullopt;
}

// One connection. Lives on one single-threaded io_context, so its members need no locks. The idle timeout is
// one timer per connection checked against a last-activity time, not a timer re-armed on every read: under
// load, per-operation timers cost a syscall each.
class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, const Handler& handler, std::atomic<int64_t>& in_flight, std::atomic<bool>& stopping,
            ServerStats& stats, int64_t idle_timeout_ms)
        : stream_(std::move(socket)), idle_timer_(stream_.get_executor()), handler_(handler), in_flight_(in_flight),
          stopping_(stopping), stats_(stats), idle_timeout_(std::chrono::milliseconds(idle_timeout_ms)) {
        buffer_.reserve(kReadChunkBytes);
        ++stats_.connections_open;
    }
    ~Session() { --stats_.connections_open; }
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;

    void Start() {
        net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
            self->Touch();
            self->ArmIdleTimer(self->idle_timeout_);
            self->Read();
        });
    }

private:
    void Touch() { last_activity_ = std::chrono::steady_clock::now(); }

    void ArmIdleTimer(std::chrono::steady_clock::duration after) {
        idle_timer_.expires_after(after);
        idle_timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
            if (ec || self->closed_) return;
            const auto idle = std::chrono::steady_clock::now() - self->last_activity_;
            const auto limit = self->idle_timeout_;
            // Idle means waiting for a request: the read in progress holds the session (and its descriptor), so
            // the socket is closed outright, which cancels that read.
            if (idle >= limit && !self->busy_) return self->CloseNow();
            self->ArmIdleTimer(idle >= limit ? limit : limit - idle);
        });
    }

    void Read() {
        parser_.emplace();
        parser_->body_limit(kRequestBodyBytesMax);
        parser_->header_limit(kRequestHeaderBytesMax);
        ReadSome();
    }

    /// Reads a request piece by piece, and every piece counts as activity: the idle timeout is the longest pause
    /// between two reads (as nginx's client_body_timeout), so an upload slower than the timeout as a whole but
    /// never silent that long is not cut.
    void ReadSome() {
        bhttp::async_read_some(stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, size_t) {
            if (!ec && !self->parser_->is_done()) {
                self->Touch();
                return self->ReadSome();
            }
            self->OnRead(ec);
        });
    }

    /// Answers a request that cannot be parsed or is refused before routing, then closes.
    void Refuse(const Refusal& refusal) {
        ++stats_.malformed_requests;
        keep_alive_ = false;
        head_ = false;
        busy_ = true;
        Write(Response{refusal.status, ErrorJson(refusal.code, refusal.message, refusal.param), "application/json", {}},
              0);
    }

    void OnRead(beast::error_code ec) {
        Touch();
        if (ec == bhttp::error::end_of_stream || ec == net::error::eof) return Close();
        if (ec == net::error::operation_aborted || closed_) return;
        if (ec) {
            if (auto refusal = RefusalForParseError(ec, std::string_view(static_cast<const char*>(buffer_.data().data()),
                                                                          buffer_.size()))) {
                return Refuse(*refusal);
            }
            return CloseNow();
        }
        auto msg = parser_->release();
        keep_alive_ = msg.keep_alive() && !stopping_.load();
        head_ = msg.method() == bhttp::verb::head;
        Request req;
        if (auto refusal = BuildRequest(msg, req)) return Refuse(*refusal);
        const unsigned version = msg.version();
        ++in_flight_;
        busy_ = true;
        auto self = shared_from_this();
        auto responded = std::make_shared<std::atomic<bool>>(false);
        Responder respond = [self, version, responded](Response r) {
            if (responded->exchange(true)) return;
            net::post(self->stream_.get_executor(),
                      [self, version, r = std::move(r)]() mutable { self->Write(std::move(r), version); });
        };
        // No handler's exception may reach the I/O thread's run loop (it would end the process): answer 500.
        try {
            handler_(std::move(req), respond);
        } catch (...) {
            respond(Response{500,
                             kInternalErrorBody,
                             "application/json",
                             {}});
        }
    }

    void Write(Response r, unsigned version) {
        auto res = std::make_shared<bhttp::response<bhttp::string_body>>();
        res->version(version == 0 ? 11 : version);
        res->result(static_cast<bhttp::status>(r.status));
        res->set(bhttp::field::server, "tally");
        res->set(bhttp::field::content_type, r.content_type);
        for (auto& [k, v] : r.headers) res->set(k, v);
        res->keep_alive(keep_alive_);
        if (r.render_body) {
            // No exception may reach the I/O thread's run loop (it would end the process): a rendering that throws
            // answers 500.
            try {
                r.body = r.render_body();
            } catch (...) {
                res->result(bhttp::status::internal_server_error);
                r.body = kInternalErrorBody;
            }
        }
        res->body() = std::move(r.body);
        res->prepare_payload();
        // HEAD: the same headers (Content-Length included) and no body, or the next response on the connection
        // would be read as this one's body.
        if (head_) res->body().clear();
        const bool counted = version != 0;
        bhttp::async_write(stream_, *res, [self = shared_from_this(), res, counted](beast::error_code ec, size_t) {
            if (counted) --self->in_flight_;
            self->busy_ = false;
            self->Touch();
            if (ec || !self->keep_alive_) return self->Close();
            self->Read();
        });
    }

    /// After a response with Connection: close. Nothing is pending, so the session (and its descriptor) goes
    /// once this returns.
    void Close() {
        closed_ = true;
        idle_timer_.cancel();
        beast::error_code ec;
        stream_.shutdown(tcp::socket::shutdown_send, ec);
    }

    /// Closes the descriptor now, cancelling a pending read.
    void CloseNow() {
        closed_ = true;
        idle_timer_.cancel();
        beast::error_code ec;
        stream_.shutdown(tcp::socket::shutdown_both, ec);
        stream_.close(ec);
    }

    tcp::socket stream_;
    net::steady_timer idle_timer_;
    std::chrono::steady_clock::time_point last_activity_;
    bool busy_ = false;
    bool closed_ = false;
    bool head_ = false;
    beast::flat_buffer buffer_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    const Handler& handler_;
    std::atomic<int64_t>& in_flight_;
    std::atomic<bool>& stopping_;
    ServerStats& stats_;
    const std::chrono::steady_clock::duration idle_timeout_;
    bool keep_alive_ = true;
};

}  // namespace

// One single-threaded io_context per I/O thread: a connection lives on one thread for its whole life, so no
// strands or scheduler locks are needed (the io_context-per-core pattern; a shared io_context with strands
// spent most of its time in locks and executor bookkeeping under load).
std::vector<std::string> PathSegments(const std::string& path) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos < path.size()) {
        size_t next = path.find('/', pos);
        if (next == std::string::npos) next = path.size();
        if (next > pos) out.push_back(path.substr(pos, next - pos));
        pos = next + 1;
    }
    return out;
}

std::variant<Request, Refusal> ParseRequest(std::string_view bytes) {
    bhttp::request_parser<bhttp::string_body> parser;
    parser.body_limit(kRequestBodyBytesMax);
    parser.header_limit(kRequestHeaderBytesMax);
    parser.eager(true);
    beast::error_code ec;
    size_t used = 0;
    while (!ec && used < bytes.size() && !parser.is_done()) {
        const size_t n = parser.put(net::buffer(bytes.data() + used, bytes.size() - used), ec);
        used += n;
        if (ec == bhttp::error::need_more) {
            // Beast wants more bytes than are left: presenting the same ones again breaks its contract (an
            // assertion in its chunk parser, found by fuzz/http_request_fuzzer). All there is was given: stop.
            ec = {};
            break;
        }
    }
    if (!ec && !parser.got_some()) return Refusal{400, "malformed_request", "empty request", nullptr};
    if (!ec && !parser.is_done()) {
        parser.put_eof(ec);
        if (!ec && !parser.is_done()) ec = bhttp::error::partial_message;
    }
    if (ec) {
        if (auto refusal = RefusalForParseError(ec, bytes.substr(0, std::min(bytes.size(), kRequestHeaderBytesMax + 1)))) {
            return *refusal;
        }
        return Refusal{400, "malformed_request", "incomplete request", nullptr};
    }
    auto msg = parser.release();
    Request req;
    if (auto refusal = BuildRequest(msg, req)) return *refusal;
    return req;
}

struct Server::Impl {
    std::string address;
    uint16_t port;
    int threads;
    Handler handler;
    ServerOptions options;
    ServerStats stats;
    int64_t accept_backoff_ms = 0;
    std::vector<std::unique_ptr<net::io_context>> contexts;
    std::unique_ptr<tcp::acceptor> acceptor;
    std::unique_ptr<net::steady_timer> accept_timer;  // after the contexts: destroyed before them
    std::vector<std::thread> workers;
    std::vector<net::executor_work_guard<net::io_context::executor_type>> guards;
    std::atomic<int64_t> in_flight{0};
    std::atomic<bool> stopping{false};
    size_t next_context = 0;

    void Accept() {
        net::io_context& target = *contexts[next_context];
        next_context = (next_context + 1) % contexts.size();
        acceptor->async_accept(target, [this](beast::error_code ec, tcp::socket socket) {
            if (ec) {
                if (!acceptor->is_open() || ec == net::error::operation_aborted) return;
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: the pending connection stays queued and accept would fail again
                // at once. Pause (doubling), so the loop does not spin, and resume when descriptors may be free.
                ++stats.accept_errors;
                accept_backoff_ms = std::clamp(accept_backoff_ms * 2, kAcceptBackoffMsMin, kAcceptBackoffMsMax);
                accept_timer->expires_after(std::chrono::milliseconds(accept_backoff_ms));
                accept_timer->async_wait([this](beast::error_code wait_ec) {
                    if (!wait_ec && acceptor->is_open()) Accept();
                });
                return;
            }
            accept_backoff_ms = 0;
            beast::error_code opt_ec;
            socket.set_option(tcp::no_delay(true), opt_ec);
            std::make_shared<Session>(std::move(socket), handler, in_flight, stopping, stats, options.idle_timeout_ms)
                ->Start();
            Accept();
        });
    }
};

Server::Server(std::string address, uint16_t port, int threads, Handler handler, ServerOptions options)
    : impl_(std::make_unique<Impl>()) {
    impl_->options = options;
    impl_->address = std::move(address);
    impl_->port = port;
    impl_->threads = threads < 1 ? 1 : threads;
    impl_->handler = std::move(handler);
}

Server::~Server() {
    try {
        Stop(0);
    } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw; the process is ending the server
    }
}

std::string Server::Start() {
    for (int i = 0; i < impl_->threads; ++i) impl_->contexts.push_back(std::make_unique<net::io_context>(1));
    impl_->acceptor = std::make_unique<tcp::acceptor>(*impl_->contexts[0]);
    impl_->accept_timer = std::make_unique<net::steady_timer>(*impl_->contexts[0]);
    beast::error_code ec;
    auto addr = net::ip::make_address(impl_->address, ec);
    if (ec) return "invalid listen address '" + impl_->address + "': " + ec.message();
    tcp::endpoint ep{addr, impl_->port};
    impl_->acceptor->open(ep.protocol(), ec);
    if (!ec) impl_->acceptor->set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) impl_->acceptor->bind(ep, ec);
    if (!ec) impl_->acceptor->listen(net::socket_base::max_listen_connections, ec);
    if (ec) return "cannot listen on " + impl_->address + ":" + std::to_string(impl_->port) + ": " + ec.message();
    for (auto& ctx : impl_->contexts) impl_->guards.push_back(net::make_work_guard(*ctx));
    impl_->Accept();
    for (auto& ctx : impl_->contexts) {
        impl_->workers.emplace_back([c = ctx.get()] {
            pthread_setname_np(pthread_self(), "tally-http");
            c->run();
        });
    }
    return {};
}

uint16_t Server::port() const {
    beast::error_code ec;
    if (!impl_->acceptor) return impl_->port;
    auto ep = impl_->acceptor->local_endpoint(ec);
    return ec ? impl_->port : ep.port();
}

int64_t Server::in_flight() const { return impl_->in_flight.load(); }

const ServerStats& Server::stats() const { return impl_->stats; }

void Server::Stop(int drain_ms) {
    if (impl_->workers.empty()) return;
    impl_->stopping = true;
    net::post(*impl_->contexts[0], [this] {
        beast::error_code ec;
        impl_->acceptor->close(ec);
        impl_->accept_timer->cancel();
    });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(drain_ms);
    while (impl_->in_flight.load() > 0 && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    impl_->guards.clear();
    for (auto& ctx : impl_->contexts) ctx->stop();
    for (auto& t : impl_->workers) t.join();
    impl_->workers.clear();
}

}  // namespace tally::http
