//! Input limits: what a single record may hold. Checked before anything is
//! stored, so an oversized request changes nothing.

use serde::{Deserialize, Serialize};

/// The most `max_body_bytes` may be set to: larger files are attachments.
pub const MAX_BODY_BYTES_CAP: usize = 64 * 1024 * 1024;

/// Per-record limits, set in `casemesh.toml` under `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest record body, in bytes. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Most labels on one record. Default 64.
    pub max_labels: usize,
    /// Longest label key, in bytes. Default 256.
    pub max_label_key_bytes: usize,
    /// Longest label value, in bytes. Default 256.
    pub max_label_value_bytes: usize,
    /// Longest collection name, in bytes. Default 128.
    pub max_collection_bytes: usize,
    /// Longest kind, in bytes. Default 64.
    pub max_kind_bytes: usize,
    /// Longest title, in bytes. Default 1024.
    pub max_title_bytes: usize,
    /// Longest content type, in bytes. Default 255.
    pub max_content_type_bytes: usize,
    /// Most attachments on one record version. Default 64.
    pub max_attachments: usize,
    /// Most subjects one record version names. Default 64.
    pub max_subjects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            max_labels: 64,
            max_label_key_bytes: 256,
            max_label_value_bytes: 256,
            max_collection_bytes: 128,
            max_kind_bytes: 64,
            max_title_bytes: 1024,
            max_content_type_bytes: 255,
            max_attachments: 64,
            max_subjects: 64,
        }
    }
}

/// A record that breaks a limit or a shape rule. `TooLarge` maps to
/// `RESOURCE_EXHAUSTED`, the rest to `INVALID_ARGUMENT`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{field} is {actual} bytes; the limit is {limit} bytes")]
    TooLarge {
        field: &'static str,
        actual: usize,
        limit: usize,
    },
    #[error("{actual} labels given; the limit is {limit}")]
    TooManyLabels { actual: usize, limit: usize },
    #[error("{field} is {actual} bytes; the limit is {limit} bytes")]
    FieldTooLong {
        field: String,
        actual: usize,
        limit: usize,
    },
    #[error("{actual} attachments given; the limit is {limit}")]
    TooManyAttachments { actual: usize, limit: usize },
    #[error("{actual} subjects given; the limit is {limit}")]
    TooManySubjects { actual: usize, limit: usize },
    #[error("{0} must not be empty")]
    Empty(&'static str),
    #[error("{0} must not contain control characters")]
    ControlCharacters(&'static str),
    #[error("file {file_name:?} ({hash}) is attached twice")]
    DuplicateAttachment { file_name: String, hash: String },
    #[error(
        "{field} is {ms} ms after 1970, past 9999-12-31T23:59:59.999Z, the last time casemesh keeps"
    )]
    TimeOutOfRange { field: &'static str, ms: u64 },
}

/// Refuses a time past [`super::MAX_TIME_MS`]: every time a peer or a
/// client sends is checked before it is kept.
pub fn check_time(field: &'static str, ms: u64) -> Result<(), LimitError> {
    if ms > super::MAX_TIME_MS {
        return Err(LimitError::TimeOutOfRange { field, ms });
    }
    Ok(())
}

impl Limits {
    /// Checks a string field: non-empty (when `required`), within `limit`
    /// bytes, no control characters.
    pub fn check_text(
        field: &'static str,
        value: &str,
        limit: usize,
        required: bool,
    ) -> Result<(), LimitError> {
        if required && value.trim().is_empty() {
            return Err(LimitError::Empty(field));
        }
        if value.len() > limit {
            return Err(LimitError::FieldTooLong {
                field: field.to_owned(),
                actual: value.len(),
                limit,
            });
        }
        if value.chars().any(char::is_control) {
            return Err(LimitError::ControlCharacters(field));
        }
        Ok(())
    }
}

/// A byte count for people: `512 B`, `3.0 MiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}
