#include "adapters/http/server.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/url.hpp>

#include <pthread.h>

#include <cctype>
#include <chrono>

namespace tally::http {
namespace {

namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

const char* ReasonJson413() {
    return R"({"error":{"type":"invalid_request_error","code":"payload_too_large","message":"request body exceeds the server limit","param":"body"}})";
}

// One connection. Lives on one single-threaded io_context, so its members need no locks. The idle timeout is
// one timer per connection checked against a last-activity time, not a timer re-armed on every read: under
// load, per-operation timers cost a syscall each.
std::string PercentDecode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
            std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
            out += static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16));
            i += 2;
        } else {
            out += s[i] == '+' ? ' ' : s[i];
        }
    }
    return out;
}

void ParseLenient(std::string_view target, Request& req) {
    const size_t q = target.find('?');
    req.path = PercentDecode(target.substr(0, q));
    if (q == std::string_view::npos) return;
    std::string_view rest = target.substr(q + 1);
    while (!rest.empty()) {
        const size_t amp = rest.find('&');
        const std::string_view pair = rest.substr(0, amp);
        const size_t eq = pair.find('=');
        if (!pair.empty()) {
            req.query[PercentDecode(pair.substr(0, eq))] =
                eq == std::string_view::npos ? std::string() : PercentDecode(pair.substr(eq + 1));
        }
        if (amp == std::string_view::npos) break;
        rest = rest.substr(amp + 1);
    }
}

class Session : public std::enable_shared_from_this<Session> {
public:
    Session(tcp::socket socket, const Handler& handler, std::atomic<int64_t>& in_flight, std::atomic<bool>& stopping)
        : stream_(std::move(socket)), idle_timer_(stream_.get_executor()), handler_(handler), in_flight_(in_flight),
          stopping_(stopping) {
        buffer_.reserve(kReadChunkBytes);
    }

    void Start() {
        net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
            self->Touch();
            self->ArmIdleTimer(std::chrono::seconds(kIdleTimeoutSeconds));
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
            const auto limit = std::chrono::seconds(kIdleTimeoutSeconds);
            if (idle >= limit && !self->busy_) return self->Close();
            self->ArmIdleTimer(idle >= limit ? limit : limit - idle);
        });
    }

    void Read() {
        parser_.emplace();
        parser_->body_limit(kRequestBodyBytesMax);
        parser_->header_limit(kRequestHeaderBytesMax);
        bhttp::async_read(stream_, buffer_, *parser_,
                          [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
    }

    void OnRead(beast::error_code ec) {
        Touch();
        if (ec == bhttp::error::end_of_stream || ec == net::error::eof) return Close();
        if (ec == bhttp::error::body_limit) {
            Response r{413, ReasonJson413(), "application/json", {}};
            keep_alive_ = false;
            return Write(std::move(r), 0);
        }
        if (ec) return Close();
        auto msg = parser_->release();
        keep_alive_ = msg.keep_alive() && !stopping_.load();
        Request req;
        req.method = std::string(msg.method_string());
        req.target = std::string(msg.target());
        auto url = boost::urls::parse_origin_form(req.target);
        if (url) {
            req.path = std::string(url->path());
            for (const auto& param : url->params()) req.query[param.key] = param.value;
        } else {
            // Stripe's clients send literal brackets in queries (lookup_keys[0]=...), which strict RFC 3986
            // parsing rejects; split leniently instead.
            ParseLenient(req.target, req);
        }
        for (const auto& field : msg) {
            std::string name(field.name_string());
            for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            req.headers[name] = std::string(field.value());
        }
        req.body = std::move(msg.body());
        const unsigned version = msg.version();
        ++in_flight_;
        busy_ = true;
        auto self = shared_from_this();
        auto responded = std::make_shared<std::atomic<bool>>(false);
        handler_(std::move(req), [self, version, responded](Response r) {
            if (responded->exchange(true)) return;
            net::post(self->stream_.get_executor(),
                      [self, version, r = std::move(r)]() mutable { self->Write(std::move(r), version); });
        });
    }

    void Write(Response r, unsigned version) {
        auto res = std::make_shared<bhttp::response<bhttp::string_body>>();
        res->version(version == 0 ? 11 : version);
        res->result(static_cast<bhttp::status>(r.status));
        res->set(bhttp::field::server, "tally");
        res->set(bhttp::field::content_type, r.content_type);
        for (auto& [k, v] : r.headers) res->set(k, v);
        res->keep_alive(keep_alive_);
        res->body() = std::move(r.body);
        res->prepare_payload();
        const bool counted = version != 0;
        bhttp::async_write(stream_, *res, [self = shared_from_this(), res, counted](beast::error_code ec, size_t) {
            if (counted) --self->in_flight_;
            self->busy_ = false;
            self->Touch();
            if (ec || !self->keep_alive_) return self->Close();
            self->Read();
        });
    }

    void Close() {
        closed_ = true;
        idle_timer_.cancel();
        beast::error_code ec;
        stream_.shutdown(tcp::socket::shutdown_send, ec);
    }

    tcp::socket stream_;
    net::steady_timer idle_timer_;
    std::chrono::steady_clock::time_point last_activity_;
    bool busy_ = false;
    bool closed_ = false;
    beast::flat_buffer buffer_;
    std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
    const Handler& handler_;
    std::atomic<int64_t>& in_flight_;
    std::atomic<bool>& stopping_;
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

struct Server::Impl {
    std::string address;
    uint16_t port;
    int threads;
    Handler handler;
    std::vector<std::unique_ptr<net::io_context>> contexts;
    std::unique_ptr<tcp::acceptor> acceptor;
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
                if (!acceptor->is_open()) return;
            } else {
                socket.set_option(tcp::no_delay(true));
                std::make_shared<Session>(std::move(socket), handler, in_flight, stopping)->Start();
            }
            Accept();
        });
    }
};

Server::Server(std::string address, uint16_t port, int threads, Handler handler)
    : impl_(std::make_unique<Impl>()) {
    impl_->address = std::move(address);
    impl_->port = port;
    impl_->threads = threads < 1 ? 1 : threads;
    impl_->handler = std::move(handler);
}

Server::~Server() { Stop(0); }

std::string Server::Start() {
    for (int i = 0; i < impl_->threads; ++i) impl_->contexts.push_back(std::make_unique<net::io_context>(1));
    impl_->acceptor = std::make_unique<tcp::acceptor>(*impl_->contexts[0]);
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

void Server::Stop(int drain_ms) {
    if (impl_->workers.empty()) return;
    impl_->stopping = true;
    net::post(*impl_->contexts[0], [this] {
        beast::error_code ec;
        impl_->acceptor->close(ec);
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
