//! Attachments: files that records carry by their BLAKE3 hash. The bytes
//! live apart from the record (as blobs); the record's signature covers the
//! hash, size, file name and media type.

use std::fmt;

use super::limits::{LimitError, Limits};

/// The BLAKE3 hash of a blob's bytes: its name everywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobHash(pub [u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a blob hash is 32 bytes (64 hex digits); got {0}")]
pub struct BadHash(String);

impl BlobHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// From the 32 raw bytes of an API field.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, BadHash> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| BadHash(format!("{} bytes", bytes.len())))
    }

    /// From 64 hex digits, as printed.
    pub fn parse_hex(s: &str) -> Result<Self, BadHash> {
        let raw = hex::decode(s.trim()).map_err(|_| BadHash(format!("{s:?}")))?;
        Self::from_slice(&raw).map_err(|_| BadHash(format!("{s:?}")))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.to_hex())
    }
}

/// A file attached to a record version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub hash: BlobHash,
    pub size: u64,
    pub file_name: String,
    pub media_type: String,
}

/// Longest attachment file name or media type, in bytes.
pub const MAX_ATTACHMENT_TEXT: usize = 255;

impl Attachment {
    /// Shape rules: a file name is required; neither text may hold control
    /// characters (a `/` in the name is allowed and means nothing).
    pub fn check_shape(&self) -> Result<(), LimitError> {
        Limits::check_text(
            "attachment file_name",
            &self.file_name,
            MAX_ATTACHMENT_TEXT,
            true,
        )?;
        Limits::check_text(
            "attachment media_type",
            &self.media_type,
            MAX_ATTACHMENT_TEXT,
            true,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_print_and_parse_as_hex() {
        let h = BlobHash::of(b"bodycam");
        assert_eq!(BlobHash::parse_hex(&h.to_hex()).unwrap(), h);
        assert!(BlobHash::parse_hex("abc").is_err());
        assert!(BlobHash::from_slice(&[0; 31]).is_err());
    }

    #[test]
    fn attachment_text_is_checked() {
        let mut a = Attachment {
            hash: BlobHash([0; 32]),
            size: 1,
            file_name: "clip.mp4".into(),
            media_type: "video/mp4".into(),
        };
        assert!(a.check_shape().is_ok());
        a.file_name = "a\nb".into();
        assert!(a.check_shape().is_err());
        a.file_name = String::new();
        assert_eq!(
            a.check_shape(),
            Err(LimitError::Empty("attachment file_name"))
        );
    }
}
