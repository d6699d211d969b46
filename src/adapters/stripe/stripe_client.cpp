#include "adapters/stripe/stripe_client.hpp"

#include <curl/curl.h>

#include <boost/json.hpp>
#include <mutex>
#include <random>
#include <thread>

#include "adapters/crypto.hpp"
#include "adapters/stripe/form_encoding.hpp"

namespace tally::stripe {
namespace {

namespace bj = boost::json;

void GlobalInit() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t WriteBody(char* data, size_t size, size_t count, void* user) {
    static_cast<std::string*>(user)->append(data, size * count);
    return size * count;
}

struct Headers {
    std::map<std::string, std::string> values;  // lowercase names
};

size_t WriteHeader(char* data, size_t size, size_t count, void* user) {
    const std::string line(data, size * count);
    const size_t colon = line.find(':');
    if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::string value = line.substr(colon + 1);
        while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(value.begin());
        while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.pop_back();
        static_cast<Headers*>(user)->values[name] = value;
    }
    return size * count;
}

int JitterPermille() {
    thread_local std::mt19937 rng{std::random_device{}()};
    return static_cast<int>(rng() % 1000);
}

ApiError ParseError(int status, const std::string& body) {
    ApiError e;
    e.http_status = status;
    boost::system::error_code ec;
    const bj::value v = bj::parse(body, ec);
    const bj::object* err = nullptr;
    if (!ec && v.is_object()) {
        if (const auto* inner = v.get_object().if_contains("error"); inner && inner->is_object()) err = &inner->get_object();
    }
    auto text = [err](const char* key) -> std::string {
        if (err == nullptr) return {};
        const auto* f = err->if_contains(key);
        return f && f->is_string() ? std::string(f->get_string()) : std::string();
    };
    e.type = text("type");
    e.code = text("code");
    e.decline_code = text("decline_code");
    e.message = text("message");
    e.param = text("param");
    if (e.type.empty()) e.type = status >= 500 ? "api_error" : "invalid_request_error";
    if (e.message.empty()) e.message = "HTTP " + std::to_string(status) + " without a Stripe error body";
    return e;
}

}  // namespace

Error ToError(const ApiError& e) {
    std::string message = "stripe " + std::to_string(e.http_status) + " " + e.type;
    if (!e.code.empty()) message += "/" + e.code;
    if (!e.decline_code.empty()) message += " (" + e.decline_code + ")";
    message += ": " + e.message;
    ErrorCode code = ErrorCode::kInternal;
    if (e.type == "idempotency_error" || e.http_status == 409) {
        code = ErrorCode::kConflict;
    } else if (e.http_status == 400) {
        code = ErrorCode::kInvalidArgument;
    } else if (e.http_status == 401) {
        code = ErrorCode::kUnauthenticated;
    } else if (e.http_status == 402) {
        return Error{ErrorCode::kPaymentRequired, std::move(message), e.param,
                     e.type == "card_error" ? ErrorReason::kCardDeclined : ErrorReason::kNone};
    } else if (e.http_status == 403) {
        code = ErrorCode::kPermissionDenied;
    } else if (e.http_status == 404) {
        code = ErrorCode::kNotFound;
    } else if (e.http_status == 429 || e.http_status >= 500) {
        code = ErrorCode::kUnavailable;
    }
    return Error{code, std::move(message), e.param};
}

Client::Client(ClientConfig config) : config_(std::move(config)) {
    GlobalInit();
    config_.retries_max = std::clamp(config_.retries_max, 0, kStripeRetryCountMax);
    while (!config_.api_base.empty() && config_.api_base.back() == '/') config_.api_base.pop_back();
    if (!config_.sleep) config_.sleep = [](std::chrono::milliseconds d) { std::this_thread::sleep_for(d); };
}

Client::~Client() = default;

std::string Client::RedactedKey() const {
    const std::string& k = config_.secret_key;
    if (k.size() <= 12) return "sk_...";
    return k.substr(0, 8) + "..." + k.substr(k.size() - 4);
}

Result<Response> Client::Send(const std::string& method, const std::string& path, const std::string& body,
                              const std::string& idempotency_key) {
    const std::string url = config_.api_base + path;
    for (int retries = 0;; ++retries) {
        std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
        if (!curl) return Internal("curl_easy_init failed");
        std::string response_body;
        Headers response_headers;
        curl_slist* headers = nullptr;
        const std::string auth = "Authorization: Bearer " + config_.secret_key;
        headers = curl_slist_append(headers, auth.c_str());
        headers = curl_slist_append(headers, (std::string("Stripe-Version: ") + kStripeVersion).c_str());
        headers = curl_slist_append(headers, "User-Agent: Tally/0.1 (+stripe-compatible client)");
        headers = curl_slist_append(headers, "Expect:");
        if (!idempotency_key.empty()) {
            headers = curl_slist_append(headers, ("Idempotency-Key: " + idempotency_key).c_str());
        }
        if (method == "POST") {
            headers = curl_slist_append(headers, "Content-Type: application/x-www-form-urlencoded");
            curl_easy_setopt(curl.get(), CURLOPT_POST, 1L);
            curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, body.c_str());
            curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
        } else if (method == "DELETE") {
            curl_easy_setopt(curl.get(), CURLOPT_CUSTOMREQUEST, "DELETE");
        }
        std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_guard(headers, curl_slist_free_all);
        curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
        curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, WriteBody);
        curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &response_body);
        curl_easy_setopt(curl.get(), CURLOPT_HEADERFUNCTION, WriteHeader);
        curl_easy_setopt(curl.get(), CURLOPT_HEADERDATA, &response_headers);
        curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(config_.timeout_ms));
        curl_easy_setopt(curl.get(), CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_.connect_timeout_ms));
        curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
        const CURLcode rc = curl_easy_perform(curl.get());

        AttemptOutcome outcome;
        long status = 0;
        if (rc == CURLE_OK) {
            curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &status);
            outcome.http_status = static_cast<int>(status);
            if (auto it = response_headers.values.find("stripe-should-retry"); it != response_headers.values.end()) {
                outcome.should_retry_header = it->second;
            }
        } else {
            outcome.connection_closed = rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR || rc == CURLE_SEND_ERROR;
        }
        if (rc == CURLE_OK && status >= 200 && status < 300) {
            Response r;
            r.http_status = static_cast<int>(status);
            r.attempts = retries + 1;
            if (auto it = response_headers.values.find("request-id"); it != response_headers.values.end()) {
                r.request_id = it->second;
            }
            boost::system::error_code ec;
            r.body = bj::parse(response_body, ec);
            if (ec) {
                Observe(method, "server_error");
                return Unavailable("stripe answered " + std::to_string(status) + " with malformed JSON");
            }
            Observe(method, "ok");
            return r;
        }
        if (ShouldRetry(outcome, retries, config_.retries_max)) {
            config_.sleep(std::chrono::milliseconds(RetryDelayMs(retries + 1, JitterPermille())));
            continue;
        }
        if (rc != CURLE_OK) {
            Observe(method, "network_error");
            return Unavailable("stripe request " + method + " " + path + " failed after " + std::to_string(retries + 1) +
                               " attempt(s): " + curl_easy_strerror(rc));
        }
        Observe(method, status >= 500 ? "server_error" : "client_error");
        return ToError(ParseError(static_cast<int>(status), response_body));
    }
}

void Client::Observe(const std::string& method, std::string_view outcome) const {
    if (config_.on_call) config_.on_call(method, outcome);
}

Result<Response> Client::Get(const std::string& path, const bj::object& query) {
    const std::string q = EncodeForm(query);
    return Send("GET", q.empty() ? path : path + "?" + q, "", "");
}

Result<Response> Client::Post(const std::string& path, const bj::object& params, std::string idempotency_key) {
    if (idempotency_key.empty()) idempotency_key = "tally-" + RandomHex(16);
    return Send("POST", path, EncodeForm(params), idempotency_key);
}

Result<Response> Client::Delete(const std::string& path, const bj::object& query) {
    const std::string q = EncodeForm(query);
    return Send("DELETE", q.empty() ? path : path + "?" + q, "", "");
}

Status Client::ListAll(const std::string& path, bj::object query,
                       const std::function<bool(const bj::object&)>& each) {
    query["limit"] = kListPageSizeMax;
    for (int page = 0; page < kListPageCountMax; ++page) {
        TALLY_ASSIGN_OR_RETURN(Response r, Get(path, query));
        const bj::object* list = r.body.if_object();
        const bj::value* data = list ? list->if_contains("data") : nullptr;
        if (data == nullptr || !data->is_array()) return InvalidArgument("stripe answered " + path + " with no list");
        std::string last_id;
        for (const auto& item : data->get_array()) {
            if (!item.is_object()) continue;
            if (!each(item.get_object())) return {};
            if (const auto* id = item.get_object().if_contains("id"); id && id->is_string()) {
                last_id = std::string(id->get_string());
            }
        }
        const bj::value* more = list->if_contains("has_more");
        if (more == nullptr || !more->is_bool() || !more->get_bool() || last_id.empty()) return {};
        query["starting_after"] = last_id;
    }
    return {};
}

}  // namespace tally::stripe
