"""Tally's own events verified by a second official SDK: Debian's python3-stripe (stripe.Webhook.construct_event).

Run by ctest as `e2e_python` with TALLY_BIN pointing at the tally binary.
"""

import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

import stripe

BIN = os.environ.get("TALLY_BIN", os.path.join(os.path.dirname(__file__), "../../build/debug/tally"))
ADMIN_KEY = "tk_test_admin_key_for_e2e_at_least_32_chars"


class Receiver(http.server.BaseHTTPRequestHandler):
    received = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((body, self.headers.get("Stripe-Signature", "")))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


class TallyEventsWithPythonSdk(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="tally-py-events-")
        self.log = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, TALLY_ADMIN_KEY=ADMIN_KEY, STRIPE_WEBHOOK_SECRET="whsec_py_events", TALLY_PORT="0",
                   TALLY_DB=os.path.join(self.dir, "t.db"))
        self.proc = subprocess.Popen([BIN, "serve"], stdout=subprocess.PIPE, stderr=self.log, text=True, env=env,
                                     cwd=self.dir)
        port = None
        deadline = time.time() + 20
        while port is None and time.time() < deadline:
            line = self.proc.stdout.readline()
            match = re.search(r"tally listening on http://[^:]+:(\d+)", line)
            if match:
                port = int(match.group(1))
        if port is None:
            self.log.seek(0)
            raise RuntimeError("tally did not start: " + self.log.read())
        self.base = "http://127.0.0.1:%d" % port
        self.receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        threading.Thread(target=self.receiver.serve_forever, daemon=True).start()

    def tearDown(self):
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.receiver.shutdown()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def post(self, path, body):
        req = urllib.request.Request(self.base + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Authorization": "Bearer " + ADMIN_KEY,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req) as res:
            return json.loads(res.read())

    def test_construct_event_verifies_a_tally_event(self):
        url = "http://127.0.0.1:%d/hooks" % self.receiver.server_address[1]
        endpoint = self.post("/v1/webhook_endpoints", {"url": url, "enabled_events": ["customer.created"]})
        customer = self.post("/v1/customers", {"external_id": "py_user", "email": "py@example.com"})
        deadline = time.time() + 15
        while not Receiver.received and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(Receiver.received, "no event arrived")
        body, header = Receiver.received[-1]
        event = stripe.Webhook.construct_event(body, header, endpoint["secret"])
        self.assertEqual(event["type"], "customer.created")
        self.assertEqual(event["data"]["object"]["id"], customer["id"])
        self.assertEqual(event["data"]["object"]["external_id"], "py_user")
        with self.assertRaises(stripe.error.SignatureVerificationError):
            stripe.Webhook.construct_event(body, header, "whsec_not_this_one")


if __name__ == "__main__":
    unittest.main()
