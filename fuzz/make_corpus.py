#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ from tests/fixtures/ and hand-written cases.

Deterministic: running it again rewrites the same files (and removes none). Each seed stays under 8 KiB.
Usage: python3 fuzz/make_corpus.py
"""
import hashlib
import hmac
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")
SEED_BYTES_MAX = 8 * 1024


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    assert len(data) < SEED_BYTES_MAX, (target, name, len(data))
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


with open(os.path.join(ROOT, "tests", "fixtures", "fixtures3.json")) as f:
    RESOURCES = json.load(f)["resources"]
with open(os.path.join(ROOT, "tests", "fixtures", "signature-vectors.json")) as f:
    VECTORS = json.load(f)["vectors"]


def event(event_type, obj, previous=None, event_id="evt_1", created=1700000000):
    data = {"object": obj}
    if previous is not None:
        data["previous_attributes"] = previous
    return compact({"id": event_id, "object": "event", "type": event_type, "created": created, "livemode": False,
                    "data": data})


def small_subscription():
    sub = json.loads(json.dumps(RESOURCES["subscription"]))
    item = sub["items"]["data"][0]
    item["price"] = {k: item["price"][k] for k in ("id", "object", "currency", "lookup_key", "recurring",
                                                      "unit_amount")}
    sub["items"]["data"] = [{k: item[k] for k in ("id", "object", "current_period_start", "current_period_end",
                                                   "price", "quantity") if k in item}]
    keep = ("id", "object", "customer", "status", "cancel_at_period_end", "canceled_at", "created", "trial_end",
            "current_period_start", "current_period_end", "items", "metadata")
    return {k: sub[k] for k in keep if k in sub}


# --- webhook_signature: mode byte, then "<header>\0<payload>" (raw) or t, delta, payload (signed) ---------------
def raw_seed(header, payload):
    return b"\x00" + header.encode() + b"\x00" + payload.encode()


def signed_seed(mode, t, delta, payload):
    return bytes([mode]) + struct.pack("<qh", t, delta) + payload.encode()


for i, v in enumerate(VECTORS):
    write("webhook_signature", f"vector_{i + 1}", raw_seed(v["header"], v["payload"]))
    write("webhook_signature", f"signed_vector_{i + 1}", signed_seed(1 | (i << 1), v["timestamp"], 0, v["payload"]))
v1 = VECTORS[0]
sig1 = v1["header"].split("v1=")[1]
for name, header in {
    "rotation_two_v1": f"t={v1['timestamp']},v1={'0' * 64},v1={sig1}",
    "v0_first": f"t={v1['timestamp']},v0={sig1},v1={sig1}",
    "unknown_scheme": f"t={v1['timestamp']},v2=abc,v1={sig1},foo",
    "no_t": f"v1={sig1}",
    "no_v1": f"t={v1['timestamp']},v0={sig1}",
    "bad_t": f"t=17e8,v1={sig1}",
    "negative_t": f"t=-1,v1={sig1}",
    "huge_t": f"t=99999999999999999999,v1={sig1}",
    "two_t": f"t=1,t={v1['timestamp']},v1={sig1}",
    "spaces": f" t={v1['timestamp']}, v1={sig1}",
    "empty_items": ",,=,t=,v1=,==",
    "uppercase_hex": f"t={v1['timestamp']},v1={sig1.upper()}",
}.items():
    write("webhook_signature", name, raw_seed(header, v1["payload"]))
write("webhook_signature", "empty", b"\x00")
write("webhook_signature", "signed_stale", signed_seed(0x03, 1735689000, 301, '{"id":"evt_1"}'))
write("webhook_signature", "signed_edge", signed_seed(0x05, 1735689000, 300, ""))
write("webhook_signature", "signed_future", signed_seed(0x01, 1735689000, -30000, "{}"))
write("webhook_signature", "signed_decorated", signed_seed(0x11, 1700000000, 5, v1["payload"]))
write("webhook_signature", "signed_fixed_now", signed_seed(0x21, 1735689600, 0, VECTORS[1]["payload"]))
write("webhook_signature", "signed_fixed_now_old", signed_seed(0x23, 0, 0, "\x00\xff"))

# --- event_decoder: event bodies, and "<a>\0<b>" pairs for ChainEvidence ---------------------------------------
sub = small_subscription()
trialing = dict(sub, status="trialing")
customer = dict(RESOURCES["customer"], metadata={"external_id": "user_42"})
invoice = dict(RESOURCES["invoice"], parent={"type": "subscription_details",
                                             "subscription_details": {"subscription": "sub_9"}})
for name, body in {
    "subscription_full": event("customer.subscription.updated", RESOURCES["subscription"], {"status": "trialing"}),
    "subscription_created": event("customer.subscription.created", trialing),
    "subscription_deleted": event("customer.subscription.deleted", dict(sub, status="canceled", canceled_at=1700000000)),
    "customer_created": event("customer.created", customer),
    "customer_deleted": event("customer.deleted", {"id": "cus_1", "object": "customer", "deleted": True}),
    "invoice_paid": event("invoice.paid", RESOURCES["invoice"]),
    "invoice_parent": event("invoice.payment_failed", invoice),
    "checkout_completed": event("checkout.session.completed", RESOURCES["checkout.session"]),
    "payment_intent_succeeded": event("payment_intent.succeeded", RESOURCES["payment_intent"]),
    "charge_refunded": event("charge.refunded", RESOURCES["charge"]),
    "unhandled_type": compact(RESOURCES["event"]),
    "expanded_customer": event("customer.subscription.updated", dict(sub, customer={"id": "cus_x", "object": "customer"})),
    "bad_status": event("customer.subscription.updated", dict(sub, status="sleeping")),
    "bad_interval": event("customer.subscription.updated", dict(sub, items={"data": [{"price": {
        "id": "price_1", "recurring": {"interval": "fortnight", "interval_count": 2}}}]})),
    "data_not_object": compact({"id": "evt_1", "type": "invoice.paid", "created": 1, "data": []}),
    "object_not_object": compact({"id": "evt_1", "type": "charge.refunded", "created": 1, "data": {"object": "x"}}),
    "livemode_string": compact({"id": "evt_1", "type": "ping", "created": 1, "livemode": "false"}),
    "escaped_keys": '{"\\u0069d":"evt_esc","type":"ping\\u002etest","created":1700000000}',
    "duplicate_id": '{"id":"evt_1","id":"evt_2","type":"ping.test","created":1700000000}',
    "created_string": '{"id":"evt_1","type":"ping.test","created":"1700000000"}',
    "created_double": '{"id":"evt_1","type":"ping.test","created":1.7e9}',
    "created_uint64": '{"id":"evt_1","type":"ping.test","created":18446744073709551615}',
    "created_int64_min": '{"id":"evt_1","type":"ping.test","created":-9223372036854775808}',
    "object_customer": '{"id":"evt_1","object":"customer","type":"ping.test","created":1}',
    "object_null": '{"id":"evt_1","object":null,"type":"ping.test","created":1}',
    "long_type": '{"id":"evt_1","type":"' + "t" * 256 + '","created":1}',
    "deep": '{"id":"evt_1","type":"x","created":1,"data":' + "[" * 40 + "]" * 40 + "}",
    "truncated": '{"id":"evt_1","type":"ping.test","created":1',
    "trailing": '{"id":"evt_1","type":"ping.test","created":1} trailing',
    "invalid_utf8": b'{"id":"evt_\xff\xfe","type":"ping.test","created":1}',
    "comment": '{"id":"evt_1",/*c*/"type":"ping.test","created":1}',
}.items():
    write("event_decoder", name, body)
updated = event("customer.subscription.updated", sub, {"status": "trialing"}, "evt_2")
created = event("customer.subscription.created", trialing, None, "evt_1")
write("event_decoder", "chain_sub", updated.encode() + b"\x00" + created.encode())
c1 = event("customer.updated", dict(customer, email="new@example.com"), {"email": customer["email"]}, "evt_c2")
c0 = event("customer.updated", dict(customer, email=customer["email"]), {"email": "new@example.com"}, "evt_c1")
write("event_decoder", "chain_mirror", c1.encode() + b"\x00" + c0.encode())
write("event_decoder", "chain_not_json", b"not json\x00" + created.encode())
write("event_decoder", "chain_nested_previous", (
    event("customer.updated", {"id": "cus_1", "address": {"city": "B"}, "metadata": {"a": [1, 2]}},
          {"address": {"city": "A"}, "metadata": {"a": [1]}}) + "\x00" +
    event("customer.updated", {"id": "cus_1", "address": {"city": "A"}, "metadata": {"a": [1]}})).encode())

# --- json_body: endpoint byte (0 customers, 1 role_override, 2 checkout, 3 portal, 4 api_keys), then the body ----
for name, (endpoint, body) in {
    "customer": (0, '{"external_id":"user_42","email":"a@example.com","name":"Zoë"}'),
    "customer_nulls": (0, '{"external_id":"u","email":null,"name":null}'),
    "customer_unknown": (0, '{"external_id":"u","plan":"pro"}'),
    "customer_number_id": (0, '{"external_id":42}'),
    "customer_duplicate_keys": (0, '{"external_id":"a","external_id":"b","email":"x","email":7}'),
    "customer_invalid_utf8": (0, b'{"external_id":"\xc3\x28","name":"\xed\xa0\x80"}'),
    "customer_nul_escape": (0, '{"external_id":"a\\u0000b","name":"\\ud800"}'),
    "customer_bom": (0, '\ufeff{"external_id":"u"}'),
    "role": (1, '{"role":"pro","reason":"support ticket 12","expires_at":1900000000}'),
    "role_huge_expiry": (1, '{"role":"pro","reason":"r","expires_at":99999999999999999999999}'),
    "role_float_expiry": (1, '{"role":"pro","reason":"r","expires_at":1.9e9}'),
    "role_negative_expiry": (1, '{"role":"pro","reason":"r","expires_at":-9223372036854775808}'),
    "role_uint64_expiry": (1, '{"role":"pro","reason":"r","expires_at":18446744073709551615}'),
    "role_bool_expiry": (1, '{"role":"pro","reason":"r","expires_at":true}'),
    "checkout": (2, '{"customer":"cust_1","plan":"pro","interval":"year","success_url":"https://a/s",'
                    '"cancel_url":"https://a/c","trial_period_days":14}'),
    "checkout_empty_interval": (2, '{"customer":"cust_1","plan":"pro","interval":""}'),
    "checkout_null_interval": (2, '{"customer":"cust_1","plan":"pro","interval":null}'),
    "checkout_empty_customer": (2, '{"customer":"","plan":"pro"}'),
    "checkout_deep": (2, '{"customer":' + "[" * 33 + "]" * 33 + "}"),
    "checkout_deep_object": (2, '{"plan":' + '{"a":' * 31 + "1" + "}" * 31 + "}"),
    "portal": (3, '{"customer":"cust_1","return_url":"https://example.com/account"}'),
    "portal_array": (3, '[{"customer":"cust_1"}]'),
    "portal_string": (3, '"cust_1"'),
    "portal_trailing": (3, '{"customer":"cust_1"} {"customer":"cust_2"}'),
    "portal_empty": (3, ""),
    "portal_whitespace": (3, " \t\r\n"),
    "api_key": (4, '{"scope":"read_only","name":"dashboard"}'),
    "api_key_bad_scope": (4, '{"scope":"root","name":"x"}'),
    "api_key_exponent": (4, '{"scope":"admin","name":"n","x":1e400}'),
    "api_key_comment": (4, '{"scope":"admin",/* c */"name":"n"}'),
    "api_key_oversize": (254, '{"scope":"admin","name":"n"}'),
}.items():
    write("json_body", name, bytes([endpoint]) + (body if isinstance(body, bytes) else body.encode()))

# --- form_encoding: form bodies ---------------------------------------------------------------------------------
for name, body in {
    "readme_example": "items[0][price]=price_A&items[0][quantity]=2&metadata[order_id]=o%201%26x&expand[0]=latest_invoice",
    "scalars": "cancel_at_period_end=true&description=",
    "unicode": "metadata[order%20id]=o%201%26x%3D%C3%BC&customer=cus_1&trial_end=",
    "encoded_brackets_plus": "metadata%5Bk%5D=a+b&lookup_keys[]=x&lookup_keys[1]=y",
    "sparse": "items[0]=a&items[2]=b",
    "unordered_indices": "a[1]=x&a[0]=y&a[2][k]=z",
    "nested_arrays": "a[0][0]=x&a[0][1]=y&a[1][0]=z",
    "leading_zero_index": "a[00]=x&a[01]=y",
    "big_index": "a[999999]=x&a[1000000]=y",
    "open_bracket": "a[b=1",
    "close_bracket": "a]=1",
    "no_name": "[x]=1",
    "twice": "a=1&a=2",
    "value_and_nested": "a=1&a[b]=2",
    "bad_escape": "a=%zz",
    "short_escape": "a=%4",
    "too_deep": "a[1][2][3][4][5][6][7][8]=1",
    "depth_limit": "a[1][2][3][4][5][6][7]=1",
    "bracket_in_part": "a[b[c]=1&a[]]=2",
    "empty_pairs": "&&a=1&&=&b",
    "nul_and_controls": "k%00=v%00%0A&k2=%FF%FE",
    "json_object": '{"items":[{"price":"p","quantity":2}],"flag":true,"none":null,"x":1.5,"k[0]":{"":[]}}',
}.items():
    write("form_encoding", name, body)

# --- http_request: raw requests ---------------------------------------------------------------------------------
webhook_body = VECTORS[0]["payload"]
for name, request in {
    "get_health": "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "head_plans": "HEAD /v1/plans HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "post_customer": "POST /v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tk_0123\r\n"
                     "Content-Type: application/json\r\nIdempotency-Key: k1\r\nContent-Length: 26\r\n\r\n"
                     '{"external_id":"user_42"}\n',
    "webhook": "POST /webhooks/stripe HTTP/1.1\r\nHost: x\r\nStripe-Signature: " + VECTORS[0]["header"] +
               f"\r\nContent-Length: {len(webhook_body)}\r\n\r\n" + webhook_body,
    "encoded_slash": "GET /v1/customers/a%2Fb/entitlements HTTP/1.1\r\nHost: x\r\n\r\n",
    "encoded_slash_lower": "GET /v1//customers//a%2fb%2F%2f/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad_escapes": "GET /v1/customers/%zz%4%/x%2 HTTP/1.1\r\nHost: x\r\n\r\n",
    "query": "GET /v1/audit?limit=5&customer=c%201+2&&=x&flag HTTP/1.1\r\nHost: x\r\n\r\n",
    "query_slash": "GET /a?b=/c/d%2F HTTP/1.1\r\n\r\n",
    "chunked": "POST /v1/api_keys HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               "5\r\n{\"sco\r\n1a\r\npe\":\"admin\",\"name\":\"n\"}\r\n0\r\n\r\n",
    "chunked_and_length": "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    "length_mismatch": "POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
    "two_lengths": "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "pipelined": "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
    "http10": "GET /health HTTP/1.0\r\n\r\n",
    "absolute_form": "GET http://example.com/v1/plans?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "asterisk": "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "lowercase_method": "get /health HTTP/1.1\r\n\r\n",
    "unknown_method": "BREW /pot HTTP/1.1\r\n\r\n",
    "bad_version": "GET / HTTP/2.0\r\n\r\n",
    "lf_only": "GET /health HTTP/1.1\nHost: x\n\n",
    "obs_fold": "GET / HTTP/1.1\r\nX-A: a\r\n b\r\n\r\n",
    "nul_in_target": b"GET /v1/\x00x HTTP/1.1\r\n\r\n",
    "nul_in_header": b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
    "tab_and_del": b"GET / HTTP/1.1\r\nX-A: a\tb\r\nX-B: \x7f\r\n\r\n",
    "high_bytes": b"GET /caf\xc3\xa9/\xff HTTP/1.1\r\nX-A: \xe2\x9c\x93\r\n\r\n",
    "space_in_target": "GET /a b HTTP/1.1\r\n\r\n",
    "duplicate_headers": "GET / HTTP/1.1\r\nX-Dup: 1\r\nx-dup: 2\r\nAUTHORIZATION: Bearer a\r\n\r\n",
    "empty_header_name": "GET / HTTP/1.1\r\n: v\r\n\r\n",
    "long_target": "GET /" + "a/" * 2100 + " HTTP/1.1\r\n\r\n",
    "many_headers": "GET / HTTP/1.1\r\n" + "".join(f"X-{i}: {'v' * 40}\r\n" for i in range(120)) + "\r\n",
    "huge_length": "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    "over_body_limit": "POST / HTTP/1.1\r\nContent-Length: 4194305\r\n\r\n",
    "incomplete": "GET / HTTP/1.1\r\nHost: x\r\n",
    "empty": "",
}.items():
    write("http_request", name, request)
