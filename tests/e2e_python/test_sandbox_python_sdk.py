"""The Stripe sandbox driven by a second official client: Debian's python3-stripe (5.0).

Whatever this SDK sends to real Stripe, the sandbox must read the same way (it sends booleans as "True", for
one). Run by ctest as `e2e_python` with TALLY_BIN pointing at the tally binary:
    TALLY_BIN=build/debug/tally /usr/bin/python3 -m unittest discover -s tests/e2e_python
"""

import http.server
import json
import os
import re
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

import stripe

BIN = os.environ.get("TALLY_BIN", os.path.join(os.path.dirname(__file__), "../../build/debug/tally"))


class Receiver(http.server.BaseHTTPRequestHandler):
    """Collects webhook deliveries: (raw body, Stripe-Signature header)."""

    received = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((body, self.headers.get("Stripe-Signature", "")))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


class SandboxWithPythonSdk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The log goes to a file: an unread pipe fills up and blocks the sandbox (and its exit) on a write.
        cls.log = tempfile.TemporaryFile(mode="w+")
        cls.proc = subprocess.Popen([BIN, "sandbox", "--port", "0"], stdout=subprocess.PIPE, stderr=cls.log, text=True)
        line = cls.proc.stdout.readline()
        match = re.search(r"listening on http://[^:]+:(\d+)", line)
        if not match:
            cls.log.seek(0)
            raise RuntimeError("sandbox did not start: " + line + cls.log.read())
        cls.port = int(match.group(1))
        stripe.api_key = "sk_test_python"
        stripe.api_base = "http://127.0.0.1:%d" % cls.port
        stripe.max_network_retries = 0
        cls.receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=cls.receiver.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.proc.terminate()
        try:
            cls.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            cls.proc.kill()
            cls.proc.wait()
            raise
        finally:
            cls.receiver.shutdown()
            cls.log.close()

    def paying_customer(self, email):
        return stripe.Customer.create(email=email, payment_method="pm_card_visa",
                                      invoice_settings={"default_payment_method": "pm_card_visa"},
                                      metadata={"external_id": email.split("@")[0]})

    def monthly_price(self, lookup_key, amount=6000):
        product = stripe.Product.create(name="Pro " + lookup_key)
        return stripe.Price.create(product=product.id, unit_amount=amount, currency="usd",
                                   recurring={"interval": "month"}, lookup_key=lookup_key)

    def test_subscription_lifecycle_with_python_booleans(self):
        customer = self.paying_customer("py-life@example.com")
        self.assertEqual(customer.metadata["external_id"], "py-life")
        price = self.monthly_price("py_pro_monthly")
        sub = stripe.Subscription.create(customer=customer.id, items=[{"price": price.id}])
        self.assertEqual(sub.status, "active")
        self.assertEqual(sub["items"]["data"][0]["price"]["id"], price.id)
        # The regression: this SDK sends True as "True"; the sandbox read it as false.
        canceled = stripe.Subscription.modify(sub.id, cancel_at_period_end=True)
        self.assertIs(canceled.cancel_at_period_end, True)
        self.assertIs(stripe.Subscription.retrieve(sub.id).cancel_at_period_end, True)
        renewed = stripe.Subscription.modify(sub.id, cancel_at_period_end=False)
        self.assertIs(renewed.cancel_at_period_end, False)
        invoices = stripe.Invoice.list(customer=customer.id)
        self.assertEqual(invoices.data[0].status, "paid")
        self.assertEqual(invoices.data[0].amount_paid, 6000)

    def test_a_value_that_is_no_boolean_integer_or_enum_is_a_400_naming_the_param(self):
        customer = self.paying_customer("py-bad@example.com")
        price = self.monthly_price("py_bad_monthly")
        sub = stripe.Subscription.create(customer=customer.id, items=[{"price": price.id}])
        cases = [
            (lambda: stripe.Subscription.modify(sub.id, cancel_at_period_end="yes"), "cancel_at_period_end"),
            (lambda: stripe.Subscription.modify(sub.id, proration_behavior="sometimes"), "proration_behavior"),
            (lambda: stripe.Subscription.create(customer=customer.id, items=[{"price": price.id}],
                                                trial_period_days="ten"), "trial_period_days"),
            (lambda: stripe.Subscription.create(customer=customer.id, items=[{"price": price.id, "quantity": "2x"}]),
             "items[0][quantity]"),
            (lambda: stripe.Price.create(product=price.product, unit_amount="12.5", currency="usd"), "unit_amount"),
        ]
        for call, param in cases:
            with self.assertRaises(stripe.error.InvalidRequestError) as caught:
                call()
            self.assertEqual(caught.exception.http_status, 400)
            self.assertEqual(caught.exception.param, param)
            self.assertEqual(caught.exception.code, "parameter_invalid")
        # Nothing changed: still renewing, one subscription.
        self.assertIs(stripe.Subscription.retrieve(sub.id).cancel_at_period_end, False)
        self.assertEqual(len(stripe.Subscription.list(customer=customer.id).data), 1)

    def test_idempotency_keys_pagination_and_errors(self):
        a = stripe.Customer.create(email="py-idem@example.com", idempotency_key="py-idem-1")
        b = stripe.Customer.create(email="py-idem@example.com", idempotency_key="py-idem-1")
        self.assertEqual(a.id, b.id)
        with self.assertRaises(stripe.error.IdempotencyError):
            stripe.Customer.create(email="other@example.com", idempotency_key="py-idem-1")
        for i in range(5):
            stripe.Customer.create(email="py-page-%d@example.com" % i)
        seen = [c.id for c in stripe.Customer.list(limit=2).auto_paging_iter()]
        self.assertEqual(len(seen), len(set(seen)))
        self.assertGreaterEqual(len(seen), 6)
        with self.assertRaises(stripe.error.InvalidRequestError) as caught:
            stripe.Customer.retrieve("cus_does_not_exist")
        self.assertEqual(caught.exception.http_status, 404)
        self.assertEqual(caught.exception.code, "resource_missing")
        with self.assertRaises(stripe.error.CardError) as declined:
            stripe.PaymentMethod.attach("pm_card_chargeDeclined", customer=a.id)
        self.assertEqual(declined.exception.code, "card_declined")

    def test_test_clock_renews_and_webhooks_verify_with_the_python_sdk(self):
        endpoint = stripe.WebhookEndpoint.create(url="http://127.0.0.1:%d/hook" % self.receiver.server_port,
                                                 enabled_events=["*"])
        self.assertTrue(endpoint.secret.startswith("whsec_"))
        now = int(time.time())
        clock = stripe.test_helpers.TestClock.create(frozen_time=now)
        customer = stripe.Customer.create(email="py-clock@example.com", test_clock=clock.id,
                                          payment_method="pm_card_visa",
                                          invoice_settings={"default_payment_method": "pm_card_visa"})
        price = self.monthly_price("py_clock_monthly", amount=3000)
        sub = stripe.Subscription.create(customer=customer.id, items=[{"price": price.id}])
        stripe.test_helpers.TestClock.advance(clock.id, frozen_time=now + 32 * 86400)
        invoices = stripe.Invoice.list(customer=customer.id).data
        self.assertEqual(sorted(i.billing_reason for i in invoices), ["subscription_create", "subscription_cycle"])
        self.assertTrue(all(i.status == "paid" for i in invoices))
        deadline = time.time() + 20
        while time.time() < deadline and not any(b"subscription_cycle" in body for body, _ in Receiver.received):
            time.sleep(0.05)
        verified = [stripe.Webhook.construct_event(body.decode(), sig, endpoint.secret) for body, sig in Receiver.received]
        types = {e["type"] for e in verified}
        self.assertIn("customer.subscription.created", types)
        self.assertIn("invoice.paid", types)
        self.assertTrue(any(e["data"]["object"].get("id") == sub.id for e in verified))
        with self.assertRaises(stripe.error.SignatureVerificationError):
            body, sig = Receiver.received[0]
            stripe.Webhook.construct_event(body.decode(), sig, "whsec_wrong")


if __name__ == "__main__":
    unittest.main()
