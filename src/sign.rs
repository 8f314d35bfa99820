//! Signatures in cosign's format, made with the user's own key (`--sign-key`), so that
//! `cosign verify --key`, Kyverno, and containers/image policies accept the image.
//!
//! What a signature is (the "simple signing" format cosign writes and reads): a small JSON
//! payload naming the repository and the signed manifest's digest ([`payload`]), an ECDSA
//! P-256 signature of it (ASN.1 DER, base64) in the annotation
//! `dev.cosignproject.cosign/signature` of the layer holding the payload, and an image
//! manifest of such layers under the tag `sha256-<hex>.sig` of the signed digest
//! ([`signature_manifest`]). Signatures are deterministic (RFC 6979), so signing the same
//! image with the same key again adds nothing.
//!
//! Keys ([`Key::load`]): ECDSA P-256 as PKCS#8 PEM (`PRIVATE KEY`) or SEC1 PEM
//! (`EC PRIVATE KEY`), or cosign's encrypted format (`ENCRYPTED SIGSTORE PRIVATE KEY`, and
//! the older `ENCRYPTED COSIGN PRIVATE KEY`): JSON holding scrypt parameters, a salt, a
//! NaCl secretbox nonce and the sealed PKCS#8 key, opened with `$COSIGN_PASSWORD`. The
//! decryption is written here with the `scrypt` and `crypto_secretbox` crates because no
//! released crate reads this format without also pulling in a whole sigstore client.
//!
//! Never printed: the key, its password or anything derived from them but the public key.
//! Errors name the file and what is wrong with it, never its contents.
//!
//! Not for: where signatures are pushed (`crate::sinks::registry`).

use std::path::Path;

use base64::Engine as _;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
use zeroize::Zeroizing;

use crate::blob::Blob;
use crate::error::{Error, Result};

/// The environment variable holding the password of an encrypted key (cosign's name).
pub const PASSWORD_ENV: &str = "COSIGN_PASSWORD";
/// The media type of a simple-signing payload layer.
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The layer annotation holding the base64 signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// A private signing key. Its `Debug` shows nothing of it.
pub struct Key {
    signing: SigningKey,
    /// Where it was read from, for messages.
    pub path: std::path::PathBuf,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({}, private)", self.path.display())
    }
}

impl Key {
    /// Reads the key at `path`; an encrypted one is opened with `$COSIGN_PASSWORD`.
    pub fn load(path: &Path) -> Result<Key> {
        let text = Zeroizing::new(std::fs::read(path).map_err(|e| {
            Error::input(format!(
                "--sign-key `{}` cannot be read: {e}",
                path.display()
            ))
        })?);
        let password = || std::env::var(PASSWORD_ENV).ok().map(Zeroizing::new);
        let signing = parse(&text, password).map_err(|why| {
            let help = if why.contains(PASSWORD_ENV) {
                "COSIGN_PASSWORD must hold the password the key was made with (`cosign generate-key-pair` asks for it; empty if none was given)"
            } else {
                "pass an ECDSA P-256 private key: a PKCS#8 PEM file (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`) or a cosign key (`cosign generate-key-pair`, with its password in COSIGN_PASSWORD)"
            };
            Error::input(format!("--sign-key `{}`: {why}", path.display())).with_help(help)
        })?;
        Ok(Key {
            signing,
            path: path.to_path_buf(),
        })
    }

    /// The public key as PEM (`PUBLIC KEY`, SubjectPublicKeyInfo), what `cosign verify
    /// --key` takes.
    pub fn public_pem(&self) -> String {
        self.signing
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .expect("a P-256 public key always encodes")
    }

    /// The base64 of the DER ECDSA signature of `payload` (SHA-256, RFC 6979 nonce).
    pub fn sign(&self, payload: &[u8]) -> String {
        let signature: Signature = self.signing.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes())
    }

    /// Whether `signature` (base64 DER) is this key's signature of `payload`.
    pub fn verifies(&self, payload: &[u8], signature: &str) -> bool {
        verify(self.signing.verifying_key(), payload, signature)
    }
}

fn verify(key: &VerifyingKey, payload: &[u8], signature: &str) -> bool {
    let Ok(der) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    Signature::from_der(&der).is_ok_and(|s| key.verify(payload, &s).is_ok())
}

/// Parses a PEM private key. The reasons it gives never quote the key.
fn parse(
    pem: &[u8],
    password: impl FnOnce() -> Option<Zeroizing<String>>,
) -> std::result::Result<SigningKey, String> {
    let (label, der) = pem_rfc7468::decode_vec(trim_to_pem(pem))
        .map_err(|_| "not a PEM file (no `-----BEGIN …-----` block that decodes)".to_string())?;
    let der = Zeroizing::new(der);
    let not_p256 = || "not an ECDSA P-256 private key".to_string();
    match label {
        "PRIVATE KEY" => SigningKey::from_pkcs8_der(&der).map_err(|_| not_p256()),
        "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&der)
            .map(SigningKey::from)
            .map_err(|_| not_p256()),
        "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => {
            let password = password().ok_or_else(|| {
                format!("an encrypted cosign key, and {PASSWORD_ENV} is not set: set it to the key's password (empty if it has none)")
            })?;
            let plain = decrypt(&der, password.as_bytes())?;
            SigningKey::from_pkcs8_der(&plain).map_err(|_| {
                "an encrypted cosign key that holds something other than an ECDSA P-256 key"
                    .to_string()
            })
        }
        "ENCRYPTED PRIVATE KEY" => Err(
            "an encrypted PKCS#8 key, which is not read here: decrypt it (`openssl pkcs8 -in KEY -out PLAIN`) or use a cosign key".to_string(),
        ),
        other => Err(format!("a PEM `{other}`, not a private key")),
    }
}

/// The PEM block of a file that may have text around it (cosign keys do not, but keys
/// exported by other tools often start with a comment).
fn trim_to_pem(text: &[u8]) -> &[u8] {
    let start = text
        .windows(11)
        .position(|w| w == b"-----BEGIN ")
        .unwrap_or(0);
    &text[start..]
}

/// The sealed box of cosign's encrypted key format (go-securesystemslib's `encrypted`).
#[derive(serde::Deserialize)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(serde::Deserialize)]
struct Kdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(serde::Deserialize)]
struct ScryptParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(serde::Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

/// Opens cosign's encrypted key: scrypt(password, salt) → 32-byte key → NaCl secretbox
/// (XSalsa20-Poly1305) → the PKCS#8 DER of the private key.
/// The most memory a key's scrypt parameters may make the decryption take.
const SCRYPT_MEMORY_LIMIT: u64 = 256 << 20;

fn decrypt(sealed: &[u8], password: &[u8]) -> std::result::Result<Zeroizing<Vec<u8>>, String> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let bad = || "an encrypted cosign key whose contents are damaged".to_string();
    let sealed: Sealed = serde_json::from_slice(sealed).map_err(|_| bad())?;
    if sealed.kdf.name != "scrypt" || sealed.cipher.name != "nacl/secretbox" {
        return Err(format!(
            "an encrypted key made with {} and {}, where cosign uses scrypt and nacl/secretbox",
            sealed.kdf.name, sealed.cipher.name
        ));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = b64.decode(&sealed.kdf.salt).map_err(|_| bad())?;
    let nonce = b64.decode(&sealed.cipher.nonce).map_err(|_| bad())?;
    let ciphertext = b64.decode(&sealed.ciphertext).map_err(|_| bad())?;
    let ScryptParams { n, r, p } = sealed.kdf.params;
    // cosign writes N = 32768, r = 8, p = 1. Larger costs are refused rather than computed:
    // a key file must not be able to make this take gigabytes or minutes.
    // scrypt needs 128·r·N bytes: bounded by 256 MiB (cosign's own: 32 MiB), which the
    // limits on N and r alone did not do (2^20 · 32 is 4 GiB).
    let memory = 128 * u64::from(r) * n;
    if !n.is_power_of_two()
        || !(2..=1 << 20).contains(&n)
        || !(1..=32).contains(&r)
        || !(1..=16).contains(&p)
        || memory > SCRYPT_MEMORY_LIMIT
    {
        return Err(format!(
            "an encrypted key with scrypt parameters N={n} r={r} p={p}, outside what is accepted (N a power of two up to 2^20, r up to 32, p up to 16, and 128·r·N up to 256 MiB)"
        ));
    }
    let params = scrypt::Params::new(n.trailing_zeros() as u8, r, p).map_err(|_| bad())?;
    let mut key = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, &salt, &params, &mut key[..]).map_err(|_| bad())?;
    if nonce.len() != 24 {
        return Err(bad());
    }
    let cipher =
        crypto_secretbox::XSalsa20Poly1305::new(crypto_secretbox::Key::from_slice(&key[..]));
    cipher
        .decrypt(crypto_secretbox::Nonce::from_slice(&nonce), &ciphertext[..])
        .map(Zeroizing::new)
        .map_err(|_| format!("the password in {PASSWORD_ENV} does not open this key"))
}

/// The simple-signing payload for the manifest `digest` in `repository` (`registry/path`,
/// cosign's `docker-reference`): the bytes cosign writes, in its field order.
pub fn payload(repository: &str, digest: &str) -> Vec<u8> {
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialise");
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":{}}},"image":{{"docker-manifest-digest":{}}},"type":"cosign container image signature"}},"optional":null}}"#,
        quote(repository),
        quote(digest)
    )
    .into_bytes()
}

/// The signature image to push under `sha256-<hex>.sig`: the layers of `existing` (the
/// manifest already under that tag, if any) with one more for `payload` signed by `key`,
/// and its config. `None` when `existing` already holds this key's signature of this
/// payload: re-signing adds nothing.
pub struct SignatureImage {
    pub manifest: Blob,
    pub config: Blob,
    pub payload: Blob,
}

/// See [`SignatureImage`].
pub fn signature_manifest(
    existing: Option<&[u8]>,
    payload: &[u8],
    key: &Key,
) -> Result<Option<SignatureImage>> {
    let payload_blob = Blob::new(
        oci_spec::image::MediaType::Other(PAYLOAD_MEDIA_TYPE.into()),
        payload.to_vec(),
    );
    let payload_digest = payload_blob.digest.to_string();
    let mut layers: Vec<serde_json::Value> = match existing {
        Some(raw) => {
            let value: serde_json::Value = serde_json::from_slice(raw).map_err(|e| {
                Error::registry(format!(
                    "the signature manifest already in the registry is not valid JSON ({e})"
                ))
            })?;
            value["layers"].as_array().cloned().unwrap_or_default()
        }
        None => Vec::new(),
    };
    let already = layers.iter().any(|l| {
        l["digest"] == payload_digest.as_str()
            && l["annotations"][SIGNATURE_ANNOTATION]
                .as_str()
                .is_some_and(|s| key.verifies(payload, s))
    });
    if already {
        return Ok(None);
    }
    layers.push(serde_json::json!({
        "mediaType": PAYLOAD_MEDIA_TYPE,
        "digest": payload_digest,
        "size": payload.len(),
        "annotations": { SIGNATURE_ANNOTATION: key.sign(payload) },
    }));
    // The config go-containerregistry gives cosign's signature images: the layers (stored
    // uncompressed, so their digests are their diff IDs) and nothing else.
    let diff_ids: Vec<&serde_json::Value> = layers.iter().map(|l| &l["digest"]).collect();
    let history: Vec<serde_json::Value> = layers
        .iter()
        .map(|_| serde_json::json!({"created": "0001-01-01T00:00:00Z"}))
        .collect();
    let config = serde_json::json!({
        "architecture": "",
        "os": "",
        "created": "0001-01-01T00:00:00Z",
        "config": {},
        "history": history,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = Blob::new(
        oci_spec::image::MediaType::ImageConfig,
        crate::image::canonical_json(&config)?,
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.digest.to_string(),
            "size": config.size(),
        },
        "layers": layers,
    });
    let manifest = Blob::new(
        oci_spec::image::MediaType::ImageManifest,
        crate::image::canonical_json(&manifest)?,
    );
    Ok(Some(SignatureImage {
        manifest,
        config,
        payload: payload_blob,
    }))
}

/// DSSE's pre-authentication encoding of `payload` of `payload_type`: what a DSSE
/// signature signs (`DSSEv1 <len> <type> <len> <payload>`, lengths in ASCII decimal).
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A Sigstore bundle v0.3 (`application/vnd.dev.sigstore.bundle.v0.3+json`) holding
/// `payload` in a DSSE envelope signed with `key`: what `cosign attest --key` makes in
/// cosign 3 (no transparency-log entry or timestamp: the key is the trust, which is what
/// `cosign verify-attestation --key K --insecure-ignore-tlog` checks). The public key is
/// named by its hint, the base64 sha256 of its DER (cosign's choice); verifiers are given
/// the key itself. Written by hand, with serde_json: the released Rust Sigstore crates
/// bring a whole client (TUF, Rekor, Fulcio) for what is four JSON fields here.
pub fn dsse_bundle(key: &Key, payload_type: &str, payload: &[u8]) -> Result<Vec<u8>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let der = key
        .signing
        .verifying_key()
        .to_public_key_der()
        .map_err(|e| Error::output(format!("encoding the public key failed: {e}")))?;
    let hint = b64.encode(<sha2::Sha256 as sha2::Digest>::digest(der.as_bytes()).as_slice());
    let bundle = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": hint}},
        "dsseEnvelope": {
            "payload": b64.encode(payload),
            "payloadType": payload_type,
            "signatures": [{"sig": key.sign(&pae(payload_type, payload)), "keyid": ""}],
        },
    });
    crate::image::canonical_json(&bundle)
}

/// Whether the DSSE envelope of `bundle` (a parsed Sigstore bundle) carries a signature
/// by `key`.
pub fn bundle_signed_by(bundle: &serde_json::Value, key: &Key) -> bool {
    let envelope = &bundle["dsseEnvelope"];
    let (Some(payload), Some(payload_type)) = (
        envelope["payload"].as_str(),
        envelope["payloadType"].as_str(),
    ) else {
        return false;
    };
    let Ok(payload) = base64::engine::general_purpose::STANDARD.decode(payload) else {
        return false;
    };
    let signed = pae(payload_type, &payload);
    envelope["signatures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["sig"].as_str())
        .any(|sig| key.verifies(&signed, sig))
}

/// The tag of the signatures of `digest` (`sha256:<hex>` → `sha256-<hex>.sig`).
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replace(':', "-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway P-256 key made for these tests (`openssl genpkey -algorithm EC -pkeyopt
    // ec_paramgen_curve:P-256`); it signs nothing anywhere else.
    const PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgmCQ/dBxZTd+l+lEx
UA0Rc6KIApOqu7/71CrjRtpWifahRANCAASJojuxMUdxDedcbfFHEGRfa+6SC4rH
ZFsLBZoflUPMpiSQkXEqpeBdCeHAfi0MMEKJiuxrpHoXitFyVgX2mDIB
-----END PRIVATE KEY-----
";

    fn key(pem: &str) -> Key {
        Key {
            signing: parse(pem.as_bytes(), || None).unwrap(),
            path: "k.pem".into(),
        }
    }

    #[test]
    fn dsse_pae_is_the_specs_and_the_bundle_signs_it() {
        // The DSSE specification's own example.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        let k = key(PKCS8);
        let bundle: serde_json::Value = serde_json::from_slice(
            &dsse_bundle(&k, "application/vnd.in-toto+json", b"{}").unwrap(),
        )
        .unwrap();
        assert_eq!(
            bundle["mediaType"],
            "application/vnd.dev.sigstore.bundle.v0.3+json"
        );
        let envelope = &bundle["dsseEnvelope"];
        assert_eq!(envelope["payload"], "e30=");
        let sig = envelope["signatures"][0]["sig"].as_str().unwrap();
        assert!(k.verifies(&pae("application/vnd.in-toto+json", b"{}"), sig));
        assert!(
            !k.verifies(b"{}", sig),
            "the payload alone is not what is signed"
        );
        assert!(bundle["verificationMaterial"]["publicKey"]["hint"].is_string());
    }

    #[test]
    fn payload_is_cosigns_bytes() {
        assert_eq!(
            String::from_utf8(payload("127.0.0.1:5000/app", "sha256:ab")).unwrap(),
            r#"{"critical":{"identity":{"docker-reference":"127.0.0.1:5000/app"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":null}"#
        );
    }

    #[test]
    fn signatures_are_deterministic_and_verify_only_with_their_key() {
        let k = key(PKCS8);
        let p = payload("r/app", "sha256:00");
        assert_eq!(k.sign(&p), k.sign(&p));
        assert!(k.verifies(&p, &k.sign(&p)));
        assert!(!k.verifies(&payload("r/app", "sha256:01"), &k.sign(&p)));
        let other = Key {
            signing: SigningKey::from_slice(&[7u8; 32]).unwrap(),
            path: "o".into(),
        };
        assert!(!other.verifies(&p, &k.sign(&p)));
        assert!(format!("{k:?}").contains("private") && !format!("{k:?}").contains("MIGH"));
        assert!(k.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
    }

    #[test]
    fn resigning_adds_no_layer_and_other_signatures_are_kept() {
        let k = key(PKCS8);
        let p = payload("r/app", "sha256:00");
        let first = signature_manifest(None, &p, &k).unwrap().unwrap();
        assert!(
            signature_manifest(Some(&first.manifest.data.to_vec().unwrap()), &p, &k)
                .unwrap()
                .is_none()
        );
        let other = Key {
            signing: SigningKey::from_slice(&[7u8; 32]).unwrap(),
            path: "o".into(),
        };
        let both = signature_manifest(Some(&first.manifest.data.to_vec().unwrap()), &p, &other)
            .unwrap()
            .unwrap();
        let value: serde_json::Value =
            serde_json::from_slice(&both.manifest.data.to_vec().unwrap()).unwrap();
        assert_eq!(value["layers"].as_array().unwrap().len(), 2);
        assert_eq!(
            value["layers"][0]["annotations"][SIGNATURE_ANNOTATION],
            k.sign(&p)
        );
    }

    #[test]
    fn bad_keys_are_refused_without_quoting_them() {
        for (text, says) in [
            ("nothing", "not a PEM file"),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "not a private key",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "not an ECDSA P-256",
            ),
            (
                "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
                "COSIGN_PASSWORD is not set",
            ),
        ] {
            let why = parse(text.as_bytes(), || None).unwrap_err();
            assert!(why.contains(says), "{text}: {why}");
            assert!(!why.contains("AAAA"));
        }
    }

    #[test]
    fn cosign_encrypted_keys_open_with_their_password_only() {
        use crypto_secretbox::aead::{Aead, KeyInit};
        // Sealed the way cosign seals (small scrypt cost to keep the test fast).
        let plain = pem_rfc7468::decode_vec(PKCS8.as_bytes()).unwrap().1;
        let (salt, nonce) = ([3u8; 32], [5u8; 24]);
        let mut k = [0u8; 32];
        scrypt::scrypt(
            b"pw",
            &salt,
            &scrypt::Params::new(10, 8, 1).unwrap(),
            &mut k,
        )
        .unwrap();
        let sealed = crypto_secretbox::XSalsa20Poly1305::new(crypto_secretbox::Key::from_slice(&k))
            .encrypt(crypto_secretbox::Nonce::from_slice(&nonce), &plain[..])
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let json = serde_json::json!({
            "kdf": {"name": "scrypt", "params": {"N": 1024, "r": 8, "p": 1}, "salt": b64.encode(salt)},
            "cipher": {"name": "nacl/secretbox", "nonce": b64.encode(nonce)},
            "ciphertext": b64.encode(sealed),
        });
        let pem = pem_rfc7468::encode_string(
            "ENCRYPTED SIGSTORE PRIVATE KEY",
            pem_rfc7468::LineEnding::LF,
            json.to_string().as_bytes(),
        )
        .unwrap();
        let opened = parse(pem.as_bytes(), || Some(Zeroizing::new("pw".into()))).unwrap();
        assert_eq!(opened, key(PKCS8).signing);
        let wrong = parse(pem.as_bytes(), || Some(Zeroizing::new("no".into()))).unwrap_err();
        assert!(wrong.contains("does not open"), "{wrong}");
    }

    #[test]
    fn scrypt_costs_are_bounded_by_the_memory_they_take() {
        let sealed = |n: u64, r: u32| {
            serde_json::json!({
                "kdf": {"name": "scrypt", "params": {"N": n, "r": r, "p": 1}, "salt": "AAAA"},
                "cipher": {"name": "nacl/secretbox", "nonce": "AAAA"},
                "ciphertext": "AAAA",
            })
            .to_string()
        };
        // 2^20 · 32 · 128 bytes = 4 GiB: within the old limits on N and r one by one, and
        // refused before scrypt runs.
        let why = decrypt(sealed(1 << 20, 32).as_bytes(), b"pw").unwrap_err();
        assert!(why.contains("256 MiB"), "{why}");
        let why = decrypt(sealed(1 << 18, 16).as_bytes(), b"pw").unwrap_err();
        assert!(why.contains("256 MiB"), "{why}");
        // cosign's own cost (32 MiB) gets past the bound (and fails on the fake data after).
        let why = decrypt(sealed(32768, 8).as_bytes(), b"pw").unwrap_err();
        assert!(!why.contains("256 MiB"), "{why}");
    }
}
