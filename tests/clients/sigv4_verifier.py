"""An HTTP server that checks every request's AWS Signature Version 4 with
botocore (AWS's own signer), as an independent check of osproxy's signing.

Usage: python sigv4_verifier.py CERT KEY ACCESS_KEY SECRET_KEY [SESSION_TOKEN]
Serves HTTPS with CERT and KEY (PEM) on 127.0.0.1 and prints
"listening PORT" once bound. Answers each request 200
{"verified": true, ...} when the signature botocore computes from the
request equals the one in its Authorization header (and the access key and
session token are the expected ones), else 403 with what it computed. Run
by the live test crates/osproxy/tests/live/tls.rs.
"""
import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

CERT, KEY, ACCESS, SECRET = sys.argv[1:5]
TOKEN = sys.argv[5] if len(sys.argv) > 5 else None


def read_body(handler):
    if handler.headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return out
            out += handler.rfile.read(size)
            handler.rfile.readline()
    length = int(handler.headers.get("content-length") or 0)
    return handler.rfile.read(length) if length else b""


class Verify(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def check(self):
        body = read_body(self)
        answer = {"verified": False}
        try:
            auth = self.headers.get("authorization", "")
            scheme, _, rest = auth.partition(" ")
            fields = dict(p.strip().split("=", 1) for p in rest.split(","))
            access, date, region, service, _ = fields["Credential"].split("/")
            signed = fields["SignedHeaders"].split(";")
            headers = {h: self.headers[h] for h in signed}
            req = AWSRequest(
                method=self.command,
                url="https://" + self.headers["host"] + self.path,
                headers=headers,
                data=body,
            )
            req.context["timestamp"] = self.headers["x-amz-date"]
            signer = SigV4Auth(Credentials(ACCESS, SECRET, TOKEN), service, region)
            canonical = signer.canonical_request(req)
            expected = signer.signature(signer.string_to_sign(req, canonical), req)
            answer = {
                "verified": scheme == "AWS4-HMAC-SHA256"
                and access == ACCESS
                and expected == fields["Signature"]
                and self.headers.get("x-amz-security-token") == TOKEN
                and (TOKEN is None or "x-amz-security-token" in signed),
                "signed_headers": signed,
                "service": service,
                "region": region,
                "canonical_request": canonical,
                "body_bytes": len(body),
            }
        except Exception as e:  # a malformed header is a failed check
            answer["error"] = repr(e)
        data = json.dumps(answer).encode()
        self.send_response(200 if answer["verified"] else 403)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = check

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Verify)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
