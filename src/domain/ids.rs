//! Identifiers: office ids, record ids and user names, each validated on
//! construction so that every value of these types is well formed.

use std::fmt;

/// Why a string is not a valid identifier. The messages say what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "office id {0:?} is not valid: use 3 to 63 characters of lower-case letters, digits and '-', not starting or ending with '-' (for example `phila-da`)"
    )]
    Office(String),
    #[error("record id {0:?} is not valid: expected `<office-id>:<32 lower-case hex digits>`")]
    Record(String),
    #[error("grant id {0:?} is not valid: expected `g-<16 lower-case hex digits>`")]
    Grant(String),
    #[error(
        "user name {0:?} is not valid: use 1 to 63 characters of lower-case letters, digits, '.', '_' and '-'"
    )]
    User(String),
}

/// An office id: a lower-case slug, 3–63 characters of `[a-z0-9-]`, not
/// starting or ending with `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OfficeId(String);

impl OfficeId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (3..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::Office(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OfficeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A record id, `<office-id>:<32 hex digits>`. The office part names the
/// record's origin; the hex part is 48 bits of creation time (ms) followed by
/// 80 random bits, so ids sort roughly by creation time and never collide in
/// practice.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId(String);

const RECORD_SUFFIX_LEN: usize = 32;

impl RecordId {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::Record(s.to_owned());
        let (office, suffix) = s.split_once(':').ok_or_else(bad)?;
        OfficeId::parse(office).map_err(|_| bad())?;
        let hex_ok = suffix.len() == RECORD_SUFFIX_LEN
            && suffix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if hex_ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(bad())
        }
    }

    /// A fresh id for a record created by `office` at `now_ms`, with
    /// `random` supplying the 80 random bits.
    pub fn generate(office: &OfficeId, now_ms: u64, random: [u8; 10]) -> Self {
        let time = now_ms & 0xFFFF_FFFF_FFFF;
        Self(format!("{office}:{time:012x}{}", hex::encode(random)))
    }

    /// The origin office named by the id.
    pub fn origin(&self) -> OfficeId {
        // The constructor checked the office part.
        let office = self.0.split_once(':').map(|(o, _)| o).unwrap_or_default();
        OfficeId(office.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user name, unique within an office: 1–63 characters of `[a-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UserName(String);

impl UserName {
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = (1..=63).contains(&s.len())
            && s.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdError::User(s.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn office_ids_are_lowercase_slugs() {
        for ok in ["phila-da", "abc", "a1-b2", &"x".repeat(63)] {
            assert!(OfficeId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Phila-DA",
            "-abc",
            "abc-",
            "a_b_c",
            "a b c",
            &"x".repeat(64),
            "",
        ] {
            assert!(OfficeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn office_id_error_says_what_is_allowed() {
        let msg = OfficeId::parse("Bad!").unwrap_err().to_string();
        assert!(msg.contains("lower-case letters, digits and '-'"), "{msg}");
    }

    #[test]
    fn generated_record_ids_parse_and_name_their_origin() {
        let office = OfficeId::parse("phila-da").unwrap();
        let id = RecordId::generate(&office, 1_700_000_000_000, [0xab; 10]);
        let parsed = RecordId::parse(id.as_str()).unwrap();
        assert_eq!(parsed.origin(), office);
        assert_eq!(id.as_str().len(), "phila-da:".len() + 32);
    }

    #[test]
    fn malformed_record_ids_are_rejected() {
        for bad in [
            "",
            "phila-da",
            "phila-da:",
            "phila-da:xyz",
            "PH:0123456789abcdef0123456789abcdef",
            "phila-da:0123456789ABCDEF0123456789ABCDEF",
            "phila-da:0123456789abcdef0123456789abcdef0",
        ] {
            assert!(RecordId::parse(bad).is_err(), "{bad}");
        }
    }
}
