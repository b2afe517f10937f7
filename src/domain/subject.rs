//! Subjects: what a record version is about — people, vehicles, units,
//! places, events — named by a kind, a value and an optional role. They are
//! signed with the version (its canonical encoding, tag v3) and travel with
//! it, so every office that holds the record can find it by them.
//!
//! A subject keeps its value as the writer typed it (that is the
//! evidence). Matching uses [`normalize`], which is part of the format:
//! the same rules on every node, documented in `docs/formats.md`, so that
//! `badge=#4471` written in Philadelphia finds `badge=4471` written in New
//! York.

use std::fmt;

/// Kinds every office knows; any other kind of lower-case letters, digits
/// and `-` is accepted too (the set is open) and matched as free text.
pub const WELL_KNOWN_KINDS: [&str; 9] = [
    "agent-name",
    "badge",
    "plate",
    "vehicle",
    "unit",
    "agency",
    "location",
    "incident-date",
    "event",
];

/// Roles every office knows; any other role of the same shape is accepted.
pub const WELL_KNOWN_ROLES: [&str; 3] = ["subject", "witness", "officer-involved"];

/// Longest kind and role, in bytes.
pub const MAX_TOKEN_BYTES: usize = 32;
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 256;

/// One subject of a record version. Ordered by kind, value, role: a
/// version's subjects are kept sorted and unique, so that one set of
/// subjects has one encoding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subject {
    pub kind: String,
    pub value: String,
    /// Empty when none was given.
    pub role: String,
}

/// Why a subject is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error(
        "subject {what} {got:?} must be 1 to {MAX_TOKEN_BYTES} lower-case letters, digits and '-'"
    )]
    BadToken { what: &'static str, got: String },
    #[error("the value of subject {kind} is empty")]
    EmptyValue { kind: String },
    #[error("the value of subject {kind} is {len} bytes; at most {MAX_VALUE_BYTES}")]
    ValueTooLong { kind: String, len: usize },
    #[error("the value of subject {kind} holds a control character")]
    ControlCharacter { kind: String },
    #[error(
        "incident-date {got:?} is not a date: use YYYY-MM-DD (also read: YYYY/MM/DD, MM/DD/YYYY)"
    )]
    BadDate { got: String },
    #[error("{got:?} is not a subject: use KIND=VALUE or KIND@ROLE=VALUE (e.g. badge=4471)")]
    Syntax { got: String },
}

fn token_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TOKEN_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Subject {
    /// A subject, checked: kind and role are tokens, the value is text of
    /// a sane length, and an `incident-date` reads as a date.
    pub fn new(kind: &str, value: &str, role: &str) -> Result<Self, SubjectError> {
        if !token_ok(kind) {
            return Err(SubjectError::BadToken {
                what: "kind",
                got: kind.to_owned(),
            });
        }
        if !role.is_empty() && !token_ok(role) {
            return Err(SubjectError::BadToken {
                what: "role",
                got: role.to_owned(),
            });
        }
        let s = Self {
            kind: kind.to_owned(),
            value: value.to_owned(),
            role: role.to_owned(),
        };
        s.check_value()?;
        Ok(s)
    }

    /// `KIND=VALUE` or `KIND@ROLE=VALUE`, as the CLI takes it.
    pub fn parse(text: &str) -> Result<Self, SubjectError> {
        let syntax = || SubjectError::Syntax {
            got: text.to_owned(),
        };
        let (left, value) = text.split_once('=').ok_or_else(syntax)?;
        let (kind, role) = left.split_once('@').unwrap_or((left, ""));
        if kind.is_empty() || (left.contains('@') && role.is_empty()) {
            return Err(syntax());
        }
        Self::new(kind, value, role)
    }

    fn check_value(&self) -> Result<(), SubjectError> {
        let kind = || self.kind.clone();
        if self.value.trim().is_empty() {
            return Err(SubjectError::EmptyValue { kind: kind() });
        }
        if self.value.len() > MAX_VALUE_BYTES {
            return Err(SubjectError::ValueTooLong {
                kind: kind(),
                len: self.value.len(),
            });
        }
        if self.value.chars().any(char::is_control) {
            return Err(SubjectError::ControlCharacter { kind: kind() });
        }
        if self.kind == "incident-date" && iso_date(&self.value).is_none() {
            return Err(SubjectError::BadDate {
                got: self.value.clone(),
            });
        }
        Ok(())
    }

    /// The value as matching sees it ([`normalize`]).
    pub fn normalized(&self) -> String {
        normalize(&self.kind, &self.value)
    }
}

impl fmt::Display for Subject {
    /// `KIND=VALUE` or `KIND@ROLE=VALUE`: what [`Subject::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.role.as_str() {
            "" => write!(f, "{}={}", self.kind, self.value),
            role => write!(f, "{}@{role}={}", self.kind, self.value),
        }
    }
}

/// A subject's value as it is matched, by kind:
///
/// - `badge`, `plate`: upper case, letters and digits only (`#44-71` →
///   `4471`, `7xkd 203` → `7XKD203`);
/// - `incident-date`: ISO 8601 `YYYY-MM-DD` (from `YYYY-MM-DD`,
///   `YYYY/MM/DD`, `MM/DD/YYYY`, or a date-time whose date is first);
/// - every other kind: lower case (Unicode), surrounding white space
///   removed and inner runs of white space made one space.
pub fn normalize(kind: &str, value: &str) -> String {
    match kind {
        "badge" | "plate" => value
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        "incident-date" => iso_date(value).unwrap_or_else(|| free_text(value)),
        _ => free_text(value),
    }
}

fn free_text(value: &str) -> String {
    value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// `YYYY-MM-DD` for a date written as `YYYY-MM-DD`, `YYYY/MM/DD` or
/// `MM/DD/YYYY` (optionally followed by a time after `T` or a space), if
/// it is a real calendar date.
fn iso_date(value: &str) -> Option<String> {
    let date = value.trim().split(['T', ' ']).next().unwrap_or_default();
    let parts: Vec<&str> = date.split(['-', '/']).collect();
    let [a, b, c] = parts.as_slice() else {
        return None;
    };
    let num = |s: &str, len: std::ops::RangeInclusive<usize>| {
        (len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let (y, m, d) = if a.len() == 4 {
        (num(a, 4..=4)?, num(b, 1..=2)?, num(c, 1..=2)?)
    } else {
        (num(c, 4..=4)?, num(a, 1..=2)?, num(b, 1..=2)?)
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=days)
        .contains(&d)
        .then(|| format!("{y:04}-{m:02}-{d:02}"))
}

/// `subjects` sorted and without repeats: how a version keeps them.
pub fn canonical_order(mut subjects: Vec<Subject>) -> Vec<Subject> {
    subjects.sort();
    subjects.dedup();
    subjects
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_normalized_per_kind() {
        let cases = [
            ("badge", "#44-71", "4471"),
            ("badge", " no. 4471 ", "NO4471"),
            ("plate", "7xkd 203", "7XKD203"),
            ("plate", "7XKD-203", "7XKD203"),
            ("incident-date", "2026-10-21", "2026-10-21"),
            ("incident-date", "2026/10/21", "2026-10-21"),
            ("incident-date", "10/21/2026", "2026-10-21"),
            ("incident-date", "2026-10-21T06:30:00Z", "2026-10-21"),
            ("incident-date", "1/2/2026", "2026-01-02"),
            ("agent-name", "  John   SMITH ", "john smith"),
            ("location", "Canal\tStreet", "canal street"),
            ("agency", "ÉQUIPE", "équipe"),
        ];
        for (kind, value, want) in cases {
            assert_eq!(normalize(kind, value), want, "{kind}={value}");
        }
    }

    #[test]
    fn dates_must_be_real() {
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "21/10/2026",
            "yesterday",
            "2026-10",
        ] {
            assert!(Subject::new("incident-date", bad, "").is_err(), "{bad}");
        }
        assert!(Subject::new("incident-date", "2024-02-29", "").is_ok());
        assert!(Subject::new("incident-date", "2023-02-29", "").is_err());
    }

    #[test]
    fn the_cli_form_reads_back() {
        let s = Subject::parse("badge@officer-involved=#4471").unwrap();
        assert_eq!(
            (s.kind.as_str(), s.value.as_str(), s.role.as_str()),
            ("badge", "#4471", "officer-involved")
        );
        assert_eq!(Subject::parse(&s.to_string()).unwrap(), s);
        let plain = Subject::parse("plate=7XKD203").unwrap();
        assert_eq!(plain.role, "");
        assert_eq!(plain.to_string(), "plate=7XKD203");
        // A value may hold '=' and '@'.
        assert_eq!(Subject::parse("location=a=b@c").unwrap().value, "a=b@c");
        for bad in [
            "badge",
            "=4471",
            "Badge=1",
            "badge@=1",
            "badge@Witness=1",
            "badge= ",
            "badge=a\u{7}b",
        ] {
            assert!(Subject::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("badge={}", "1".repeat(MAX_VALUE_BYTES + 1));
        assert!(matches!(
            Subject::parse(&long),
            Err(SubjectError::ValueTooLong { .. })
        ));
    }

    #[test]
    fn a_set_of_subjects_has_one_order() {
        let a = Subject::parse("plate=1").unwrap();
        let b = Subject::parse("badge=2").unwrap();
        assert_eq!(
            canonical_order(vec![a.clone(), b.clone(), a.clone()]),
            vec![b, a]
        );
    }
}
