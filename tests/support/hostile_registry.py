"""A registry that misbehaves on purpose, for the tests of what the tool reads from
registries it does not trust. Python's standard library only.

    hostile_registry.py PORT MODE [REALM_PORT CERT KEY]

Modes:
  token-newline   asks for a bearer token, and the token endpoint answers one with a
                  newline in it (not a valid header value)
  oversize-blob   serves an image whose one layer's descriptor says 97 bytes, then sends
                  that layer's body without end
  endless-config  serves an image whose config's body has no end
  manifest-flaky  answers the first manifest request 503 and the second 429, then well
  manifest-429    answers every manifest request 429 Too Many Requests
  endless-manifest  serves a manifest whose body has no end
  slow-manifest   sends a manifest's headers, then one byte every half second
  slow-token      asks for a bearer token; the token service sends headers, then
                  one byte every half second
  endless-token   asks for a bearer token; the token service's answer has no end
  endless-referrers  serves the image of oversize-blob (layer well-behaved), and a
                  referrers list without end
  wrong-digest    answers every manifest request, by tag or digest, with the same manifest
  huge-sizes      serves a manifest whose two layers declare 2^63-1 bytes each
  http-realm      HTTPS (with CERT and KEY) asking for a bearer token from a plain-HTTP
                  token service on REALM_PORT, which logs what reaches it
  http-realm-lower    the same with the challenge written `bearer realm=…`
  http-realm-multi    the same with `Basic realm="r", Bearer realm=…` (two challenges)

Every request line is written to stderr.
"""
import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
MODE = sys.argv[2]


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# A one-platform image whose layer is said to be 97 bytes long.
CONFIG = json.dumps(
    {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]},
        "config": {},
    }
).encode()
LAYER_DIGEST = "sha256:" + "1" * 64
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digest(CONFIG),
            "size": len(CONFIG),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": LAYER_DIGEST,
                "size": 97,
            }
        ],
    }
).encode()


MANIFEST_REQUESTS = [0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        sys.stderr.write("%s\n" % (self.requestline,))

    def send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def endless(self):
        """A 200 without a length whose body goes on until the client stops reading."""
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        chunk = b"\0" * 65536
        try:
            while True:
                self.wfile.write(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return

    def trickle(self):
        """A 200 whose body comes one byte every half second, for as long as the client waits.

        Well under the tests' 2 s stall timeout (a byte every 2 s raced it: a server 50 ms
        late under load was a stall, not too slow) and well below their 10 bytes per second.
        """
        import time

        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            while True:
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.5)
        except (BrokenPipeError, ConnectionResetError):
            return

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?")[0]
        if MODE.startswith("http-realm"):
            if self.server.server_port == REALM_PORT:
                sys.stderr.write(
                    "REALM %s authorization=%s\n"
                    % (self.requestline, "yes" if self.headers.get("Authorization") else "no")
                )
                return self.send(200, json.dumps({"token": "t"}).encode())
            realm = 'Bearer realm="http://127.0.0.1:%d/token",service="hostile"' % REALM_PORT
            if MODE == "http-realm-lower":
                realm = 'bearer realm="http://127.0.0.1:%d/token",service="hostile"' % REALM_PORT
            elif MODE == "http-realm-multi":
                realm = 'Basic realm="r", ' + realm
            return self.send(401, b"{}", [("WWW-Authenticate", realm)])
        if MODE in ("slow-token", "endless-token"):
            if path == "/token":
                return self.trickle() if MODE == "slow-token" else self.endless()
            if self.headers.get("Authorization", "").startswith("Bearer "):
                return self.send(404)
            realm = 'Bearer realm="http://127.0.0.1:%d/token",service="hostile"' % PORT
            return self.send(401, b"{}", [("WWW-Authenticate", realm)])
        if MODE == "token-newline":
            if path == "/token":
                return self.send(
                    200,
                    json.dumps({"token": "tok\nInjected: 1"}).encode(),
                    [("Content-Type", "application/json")],
                )
            if self.headers.get("Authorization", "").startswith("Bearer "):
                return self.send(404)
            realm = 'Bearer realm="http://127.0.0.1:%d/token",service="hostile"' % PORT
            return self.send(401, b"{}", [("WWW-Authenticate", realm)])
        if MODE in (
            "oversize-blob",
            "endless-config",
            "manifest-flaky",
            "manifest-429",
            "endless-manifest",
            "slow-manifest",
            "endless-referrers",
            "wrong-digest",
            "huge-sizes",
        ):
            if path == "/v2/":
                return self.send(200, b"{}")
            if "/referrers/" in path and MODE == "endless-referrers":
                return self.endless()
            if "/manifests/" in path and MODE == "endless-manifest":
                return self.endless()
            if "/manifests/" in path and MODE == "slow-manifest":
                return self.trickle()
            if "/manifests/" in path and MODE == "huge-sizes":
                huge = json.loads(MANIFEST)
                huge["layers"] = [dict(huge["layers"][0], size=2**63 - 1)] * 2
                body = json.dumps(huge).encode()
                return self.send(
                    200, body, [("Content-Type", "application/vnd.oci.image.manifest.v1+json")]
                )
            if "/manifests/" in path and not path.endswith("/manifests/1") and MODE != "wrong-digest":
                return self.send(404)
            if "/manifests/" in path:
                MANIFEST_REQUESTS[0] += 1
                n = MANIFEST_REQUESTS[0]
                if MODE == "manifest-429" or (MODE == "manifest-flaky" and n == 2):
                    return self.send(429, b'{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}')
                if MODE == "manifest-flaky" and n == 1:
                    return self.send(503, b"busy")
                return self.send(
                    200,
                    MANIFEST,
                    [
                        ("Content-Type", "application/vnd.oci.image.manifest.v1+json"),
                        ("Docker-Content-Digest", digest(MANIFEST)),
                    ],
                )
            endless = (MODE == "endless-config" and path.endswith(digest(CONFIG))) or (
                MODE == "oversize-blob" and path.endswith(LAYER_DIGEST)
            )
            if endless:
                return self.endless()
            if MODE == "manifest-flaky" and path.endswith(LAYER_DIGEST):
                return self.send(404)
            if path.endswith(digest(CONFIG)) and not endless:
                return self.send(200, CONFIG)
            return self.send(404)
        self.send(500)


REALM_PORT = int(sys.argv[3]) if len(sys.argv) > 3 else None
if MODE.startswith("http-realm"):
    import ssl
    import threading

    realm = ThreadingHTTPServer(("127.0.0.1", REALM_PORT), Handler)
    threading.Thread(target=realm.serve_forever, daemon=True).start()
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[4], sys.argv[5])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()
else:
    ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
