//! Content-addressed blobs: bytes plus their media type and sha256 digest, and the
//! hashing writer that computes a digest while bytes stream through.
//!
//! Digests are `oci_spec::image::Digest` values, always computed over exactly the bytes
//! that are stored and written.

use std::io::{self, Write};
use std::str::FromStr;
use std::sync::Arc;

use oci_spec::image::{Descriptor, Digest, MediaType};
use sha2::{Digest as _, Sha256};

/// A blob of an image: layer, config, manifest or index.
#[derive(Debug, Clone)]
pub struct Blob {
    pub media_type: MediaType,
    pub digest: Digest,
    pub data: Arc<[u8]>,
}

impl Blob {
    /// Hashes `data` and wraps it.
    pub fn new(media_type: MediaType, data: Vec<u8>) -> Self {
        let digest = sha256(&data);
        Blob {
            media_type,
            digest,
            data: data.into(),
        }
    }

    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }

    /// A descriptor for this blob (no platform, no annotations).
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.size(), self.digest.clone())
    }
}

/// The sha256 digest of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    digest_from(Sha256::digest(data).as_slice())
}

/// The sha256 digest of the first `size` bytes of an open file, read in pieces with
/// positioned reads; fails if the file is shorter.
pub fn sha256_open(file: &std::fs::File, size: u64) -> io::Result<Digest> {
    use std::os::unix::fs::FileExt;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        let want = buf
            .len()
            .min(usize::try_from(size - at).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file became shorter while it was read",
            ));
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(digest_from(hasher.finalize().as_slice()))
}

/// Turns 32 raw bytes of sha256 output into a `sha256:<hex>` digest.
pub fn digest_from(bytes: &[u8]) -> Digest {
    Digest::from_str(&format!("sha256:{}", hex::encode(bytes)))
        .expect("a sha256 hex digest is a valid digest")
}

/// The hex part of a sha256 digest (the file name under `blobs/sha256/`).
pub fn hex(digest: &Digest) -> &str {
    digest.digest()
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// Returns the inner writer, the digest and the number of bytes written.
    pub fn finish(self) -> (W, Digest, u64) {
        let digest = digest_from(self.hasher.finalize().as_slice());
        (self.inner, digest, self.count)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (data, digest, n) = w.finish();
        assert_eq!((data.len(), n), (3, 3));
        assert_eq!(digest, sha256(b"abc"));
    }
}
