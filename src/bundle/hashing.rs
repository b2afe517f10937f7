//! A reader that counts and hashes what passes through it (SHA-256 for
//! the manifest, BLAKE3 for files), shared by the writer and the verifier.

use std::io::{self, Read};

/// A reader that counts and hashes what passes through it.
pub(super) struct Hashing<R> {
    inner: R,
    sha256: ring::digest::Context,
    blake3: Option<blake3::Hasher>,
    pub(super) count: u64,
}

impl<R> Hashing<R> {
    pub(super) fn new(inner: R, blake3: bool) -> Self {
        Self {
            inner,
            sha256: ring::digest::Context::new(&ring::digest::SHA256),
            blake3: blake3.then(blake3::Hasher::new),
            count: 0,
        }
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        if let Some(b) = &mut self.blake3 {
            b.update(bytes);
        }
        self.count += bytes.len() as u64;
    }

    pub(super) fn sha256(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.sha256.clone().finish().as_ref());
        out
    }

    pub(super) fn blake3(&self) -> Option<[u8; 32]> {
        self.blake3.as_ref().map(|b| *b.finalize().as_bytes())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.update(&buf[..n]);
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// Verifying
