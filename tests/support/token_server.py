#!/usr/bin/env python3
"""A token server for registry tests (distribution's token auth).

Answers GET /token?service=S&scope=repository:NAME:ACTIONS with {"token": JWT} after
checking HTTP Basic credentials. Repositories under `others/` get `pull` only, as a
namespace the user does not own. The JWT is RS256, signed with the `openssl` CLI, and
carries the signing certificate in its `x5c` header (the registry's rootcertbundle).

Usage: token_server.py PORT USER PASSWORD KEY.pem CERT.pem ISSUER
"""
import base64, json, subprocess, sys, time, os
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import urlparse, parse_qs

port, user, password, key, cert, issuer = sys.argv[1:7]
der = subprocess.run(["openssl", "x509", "-in", cert, "-outform", "DER"], capture_output=True, check=True).stdout

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if url.path != "/token" or self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":", 2)
            actions = actions.split(",")
            if name.startswith("others/"):
                # Someone else's namespace: readable, not writable.
                actions = [a for a in actions if a == "pull"]
            access.append({"type": kind, "name": name, "actions": actions})
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": issuer, "sub": user, "aud": query.get("service", [""])[0], "exp": now + 600,
                  "nbf": now - 10, "iat": now, "jti": b64url(os.urandom(12)), "access": access}
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        signature = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input.encode(),
                                   capture_output=True, check=True).stdout
        token = signing_input + "." + b64url(signature)
        body = json.dumps({"token": token, "access_token": token, "expires_in": 600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        sys.stderr.write("token: " + (args[0] % args[1:]) + "\n")

HTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
