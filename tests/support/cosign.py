"""Cosign-format keys and signature checks for cargo-microimage's tests, written apart from
the tool (Python's `cryptography`, `hashlib.scrypt` and PyNaCl) so that the tool's output
is checked by code that shares nothing with it. Debian's skopeo and podman have sigstore
disabled and cosign is not packaged here (RECIPES.md), hence this.

  cosign.py keygen DIR PASSWORD
      writes DIR/key.pem (PKCS#8 PEM), DIR/cosign.key (the same key in cosign's encrypted
      format, sealed with PASSWORD as `cosign generate-key-pair` seals it: scrypt
      N=32768 r=8 p=1, NaCl secretbox) and DIR/pub.pem.

  cosign.py check URL REPOSITORY DIGEST PUBKEY...
      reads the tag sha256-<hex>.sig of DIGEST from the registry at URL (plain HTTP, no
      auth), and prints JSON: the number of signature layers, and for each layer whether
      its payload names DIGEST and which of the PUBKEYs its signature verifies with.

  cosign.py referrers URL REPOSITORY DIGEST
      prints the referrers tag schema index (tag sha256-<hex>) of DIGEST as JSON.
"""

import base64
import hashlib
import json
import os
import sys
import urllib.request

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec


def keygen(out, password):
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with open(os.path.join(out, "key.pem"), "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(os.path.join(out, "pub.pem"), "wb") as f:
        f.write(
            key.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
    import nacl.secret

    salt, nonce = os.urandom(32), os.urandom(24)
    box_key = hashlib.scrypt(
        password.encode(), salt=salt, n=32768, r=8, p=1, maxmem=64 << 20, dklen=32
    )
    sealed = nacl.secret.SecretBox(box_key).encrypt(der, nonce).ciphertext
    b64 = lambda b: base64.b64encode(b).decode()
    body = json.dumps(
        {
            "kdf": {
                "name": "scrypt",
                "params": {"N": 32768, "r": 8, "p": 1},
                "salt": b64(salt),
            },
            "cipher": {"name": "nacl/secretbox", "nonce": b64(nonce)},
            "ciphertext": b64(sealed),
        }
    ).encode()
    text = base64.b64encode(body).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    with open(os.path.join(out, "cosign.key"), "w") as f:
        f.write("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
        f.write("\n".join(lines) + "\n")
        f.write("-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")


def get(url, accept=None):
    request = urllib.request.Request(url)
    if accept:
        request.add_header("Accept", accept)
    with urllib.request.urlopen(request) as response:
        return response.read()


def check(url, repository, digest, pubkeys):
    tag = digest.replace(":", "-") + ".sig"
    manifest = json.loads(
        get(
            f"{url}/v2/{repository}/manifests/{tag}",
            "application/vnd.oci.image.manifest.v1+json",
        )
    )
    keys = []
    for path in pubkeys:
        with open(path, "rb") as f:
            keys.append((path, serialization.load_pem_public_key(f.read())))
    layers = []
    for layer in manifest["layers"]:
        payload = get(f"{url}/v2/{repository}/blobs/{layer['digest']}")
        assert hashlib.sha256(payload).hexdigest() == layer["digest"].split(":")[1]
        doc = json.loads(payload)
        signature = base64.b64decode(
            layer["annotations"]["dev.cosignproject.cosign/signature"]
        )
        verified = []
        for path, key in keys:
            try:
                key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
                verified.append(path)
            except InvalidSignature:
                pass
        layers.append(
            {
                "media_type": layer["mediaType"],
                "names_digest": doc["critical"]["image"]["docker-manifest-digest"]
                == digest,
                "type": doc["critical"]["type"],
                "identity": doc["critical"]["identity"]["docker-reference"],
                "verified_by": verified,
            }
        )
    print(json.dumps({"count": len(layers), "layers": layers}))


def referrers(url, repository, digest):
    tag = digest.replace(":", "-")
    print(
        get(
            f"{url}/v2/{repository}/manifests/{tag}",
            "application/vnd.oci.image.index.v1+json",
        ).decode()
    )


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "keygen":
        keygen(*args)
    elif command == "check":
        check(args[0], args[1], args[2], args[3:])
    elif command == "referrers":
        referrers(*args)
    else:
        sys.exit(f"unknown command {command}")
