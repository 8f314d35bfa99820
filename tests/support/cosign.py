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

  cosign.py manifest URL REPOSITORY DIGEST
      prints the manifest DIGEST.

  cosign.py registry-bundle URL REPOSITORY DIGEST PUBKEY...
      the same for the bundle in the artifact manifest DIGEST in the registry at URL.

  cosign.py bundle FILE PUBKEY...
      reads a Sigstore bundle (v0.3, a DSSE envelope inside) and prints JSON: its media
      type, the envelope's payload type, the statement it carries, and which of the
      PUBKEYs verify the signature over DSSE's pre-authentication encoding.
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


def manifest(url, repository, digest):
    print(
        get(
            f"{url}/v2/{repository}/manifests/{digest}",
            "application/vnd.oci.image.manifest.v1+json",
        ).decode()
    )


def pae(payload_type, payload):
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def bundle(path, pubkeys):
    with open(path, "rb") as f:
        check_bundle(f.read(), pubkeys)


def registry_bundle(url, repository, digest, pubkeys):
    manifest = json.loads(
        get(
            f"{url}/v2/{repository}/manifests/{digest}",
            "application/vnd.oci.image.manifest.v1+json",
        )
    )
    layer = manifest["layers"][0]["digest"]
    data = get(f"{url}/v2/{repository}/blobs/{layer}")
    assert hashlib.sha256(data).hexdigest() == layer.split(":")[1]
    check_bundle(data, pubkeys)


def check_bundle(data, pubkeys):
    doc = json.loads(data)
    envelope = doc["dsseEnvelope"]
    payload = base64.b64decode(envelope["payload"])
    signed = pae(envelope["payloadType"], payload)
    verified = []
    for key_path in pubkeys:
        with open(key_path, "rb") as f:
            key = serialization.load_pem_public_key(f.read())
        for s in envelope["signatures"]:
            try:
                key.verify(base64.b64decode(s["sig"]), signed, ec.ECDSA(hashes.SHA256()))
                verified.append(key_path)
                break
            except InvalidSignature:
                pass
    print(
        json.dumps(
            {
                "media_type": doc["mediaType"],
                "payload_type": envelope["payloadType"],
                "has_key_hint": bool(doc["verificationMaterial"]["publicKey"]["hint"]),
                "statement": json.loads(payload),
                "verified_by": verified,
            }
        )
    )


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "keygen":
        keygen(*args)
    elif command == "check":
        check(args[0], args[1], args[2], args[3:])
    elif command == "referrers":
        referrers(*args)
    elif command == "manifest":
        manifest(*args)
    elif command == "bundle":
        bundle(args[0], args[1:])
    elif command == "registry-bundle":
        registry_bundle(args[0], args[1], args[2], args[3:])
    else:
        sys.exit(f"unknown command {command}")
