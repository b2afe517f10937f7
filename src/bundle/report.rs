//! What verification found, as typed findings, and its text form.

use std::fmt;

use serde::Serialize;

use crate::domain::audit::format_time;

/// What [`verify`] found: what the bundle holds, item by item, and every
/// check that failed. Printed as text (`Display`) or, by
/// `casemesh verify-bundle --json`, as JSON (`Serialize`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// From the manifest; empty when it could not be read.
    pub format: String,
    pub collection: String,
    pub exported_by: String,
    pub exported_at_ms: Option<u64>,
    /// Whether fingerprints to trust were given.
    pub trust_given: bool,
    /// Whether the exporting office's certificate is one of them: only
    /// then does the bundle prove who made it.
    pub exporter_trusted: bool,
    pub offices: Vec<OfficeFinding>,
    pub versions: Vec<VersionFinding>,
    pub audit: AuditFinding,
    /// Things a reader must know that are not failures (files the exporter
    /// did not hold, certificates it no longer had).
    pub notes: Vec<String>,
    /// Every check that failed, each naming its item first.
    pub failures: Vec<String>,
}

/// What verification comes to, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check passed, and the exporting office's certificate is one
    /// given with `--trust`.
    Verified,
    /// Every check passed against the certificates the bundle itself
    /// carries, but the exporting office's was not compared with a known
    /// fingerprint: anyone could have made such a bundle.
    UnknownOffice,
    /// A check failed.
    Failed,
}

/// Longest text the report holds of any one item (a title, an audit
/// entry's target, a failure): a hostile bundle could otherwise make the
/// report as large as all of its members together.
pub(super) const MAX_SHOWN: usize = 4096;

/// `text`, cut to [`MAX_SHOWN`] bytes (at a character boundary) with a
/// mark saying how long it was.
pub(super) fn clipped(text: &str) -> String {
    if text.len() <= MAX_SHOWN {
        return text.to_owned();
    }
    let mut end = MAX_SHOWN;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// One office certificate, or one the exporter could not include.
#[derive(Debug, Clone, Serialize)]
pub struct OfficeFinding {
    pub office: String,
    /// `None`: not in the bundle (the exporter no longer pins the office).
    pub fingerprint: Option<String>,
    pub valid: bool,
    pub trust: Trust,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// No `--trust` given: compare the fingerprint out of band.
    NotCompared,
    Trusted,
    NotTrusted,
}

/// One record version in the bundle.
#[derive(Debug, Clone, Serialize)]
pub struct VersionFinding {
    pub record: String,
    pub version: u64,
    pub origin: String,
    pub collection: String,
    pub title: String,
    pub updated_at_ms: u64,
    pub deleted: bool,
    pub signature: Signature,
    pub attachments: Vec<AttachmentFinding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signature {
    Ok,
    Fails,
    /// The exporter no longer held the origin's certificate (a note).
    NotCheckedNoCertificate,
    /// It could not be checked (a failure says why).
    NotChecked,
}

/// One attachment a version lists.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentFinding {
    pub file_name: String,
    pub media_type: String,
    pub size: u64,
    pub hash: String,
    pub state: FileState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    Ok,
    WrongSize,
    HashFails,
    /// Not held by the exporting office (a note).
    NotHeldByExporter,
    Missing,
}

/// The exporting office's audit excerpt.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditFinding {
    pub office: String,
    /// The signed head the excerpt is bound to: entry and time.
    pub head_seq: Option<u64>,
    pub head_at_ms: Option<u64>,
    pub entries: Vec<AuditEntryFinding>,
}

/// One included audit entry.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntryFinding {
    pub seq: u64,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    /// Whether it checked out at its place in the chain.
    pub checks_out: bool,
}

impl Report {
    pub fn verdict(&self) -> Verdict {
        if !self.failures.is_empty() {
            Verdict::Failed
        } else if !self.exporter_trusted {
            Verdict::UnknownOffice
        } else {
            Verdict::Verified
        }
    }

    /// Every check passed and the exporting office is one given with
    /// `--trust`: `casemesh verify-bundle` exits 0 only then.
    pub fn is_verified(&self) -> bool {
        self.verdict() == Verdict::Verified
    }

    /// Every check passed against the certificates the bundle carries,
    /// whether or not they were compared with known fingerprints.
    pub fn is_self_consistent(&self) -> bool {
        self.failures.is_empty()
    }

    /// The `--trust` options that would compare every certificate in the
    /// bundle with the fingerprint read from it.
    fn trust_options(&self) -> String {
        let options: Vec<String> = self
            .offices
            .iter()
            .filter_map(|o| o.fingerprint.as_ref())
            .map(|fp| format!("--trust {fp}"))
            .collect();
        options.join(" ")
    }

    fn exporter_fingerprint(&self) -> Option<&str> {
        self.offices
            .iter()
            .find(|o| o.office == self.exported_by)
            .and_then(|o| o.fingerprint.as_deref())
    }

    fn write_verdict(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verdict() {
            Verdict::Verified => writeln!(
                f,
                "VERIFIED: every signature, hash, certificate and audit entry above checked out, \
                 and the certificate of the exporting office {} is one given with --trust.",
                self.exported_by
            ),
            Verdict::UnknownOffice => {
                let fp = self.exporter_fingerprint().unwrap_or("(none)");
                writeln!(
                    f,
                    "NOT CHECKED AGAINST A KNOWN OFFICE: the bundle is self-consistent (every \
                     signature, hash, certificate and audit entry above checks out against the \
                     certificates inside it), but nothing was checked against an office you \
                     know: whoever made the bundle also chose its certificates. To verify it, \
                     compare each fingerprint above with its office out of band, as when \
                     pinning a peer (the exporting office {}'s is {fp}), and run again with:",
                    self.exported_by
                )?;
                writeln!(f, "  {}", self.trust_options())
            }
            Verdict::Failed => {
                writeln!(f, "FAILED: {} check(s) did not pass:", self.failures.len())?;
                for failure in &self.failures {
                    writeln!(f, "  - {failure}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for OfficeFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(fp) = &self.fingerprint else {
            return write!(
                f,
                "{:<20} (certificate not in the bundle: the exporting office no longer pins it)",
                self.office
            );
        };
        let trust = match self.trust {
            Trust::NotCompared => "not compared",
            Trust::Trusted => "trusted (given with --trust)",
            Trust::NotTrusted => "NOT TRUSTED: not among the fingerprints given",
        };
        let valid = if self.valid { "" } else { "  INVALID" };
        write!(f, "{:<20} {fp}  {trust}{valid}", self.office)
    }
}

impl VersionFinding {
    fn line(&self, bundle_collection: &str) -> String {
        let mut line = format!(
            "{} v{}  by {}  updated {}  {:?}",
            self.record,
            self.version,
            self.origin,
            format_time(self.updated_at_ms),
            self.title
        );
        if self.deleted {
            line.push_str("  DELETED");
        }
        if self.collection != bundle_collection {
            line.push_str(&format!("  (in collection {:?})", self.collection));
        }
        line.push_str(match self.signature {
            Signature::Ok => "  signature ok",
            Signature::Fails => "  SIGNATURE FAILS",
            Signature::NotCheckedNoCertificate => "  signature NOT CHECKED (no certificate)",
            Signature::NotChecked => "  signature NOT CHECKED",
        });
        line
    }
}

impl fmt::Display for AttachmentFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            FileState::Ok => "present, hash ok",
            FileState::WrongSize => "present, WRONG SIZE",
            FileState::HashFails => "present, HASH FAILS",
            FileState::NotHeldByExporter => "MISSING (not held by the exporting office)",
            FileState::Missing => "MISSING",
        };
        write!(
            f,
            "attachment {:?} ({}, {} bytes, BLAKE3 {}): {state}",
            self.file_name, self.media_type, self.size, self.hash
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unknown = |s: &str| {
            if s.is_empty() {
                "(unknown: manifest unreadable)".to_owned()
            } else {
                s.to_owned()
            }
        };
        writeln!(f, "casemesh case bundle ({})", unknown(&self.format))?;
        writeln!(f, "  collection:  {}", unknown(&self.collection))?;
        writeln!(f, "  exported by: {}", unknown(&self.exported_by))?;
        match self.exported_at_ms {
            Some(ms) => writeln!(f, "  exported at: {}", format_time(ms))?,
            None => writeln!(f, "  exported at: (unknown)")?,
        }
        writeln!(f)?;
        writeln!(f, "Office certificates ({}):", self.offices.len())?;
        for office in &self.offices {
            writeln!(f, "  {office}")?;
        }
        if !self.trust_given {
            writeln!(
                f,
                "  No --trust given: compare these fingerprints with each office out of band \
                 (as when pinning a peer), or pass them with --trust."
            )?;
        }
        writeln!(f)?;
        writeln!(f, "Record versions ({}):", self.versions.len())?;
        for v in &self.versions {
            writeln!(f, "  {}", v.line(&self.collection))?;
            for a in &v.attachments {
                writeln!(f, "      {a}")?;
            }
        }
        writeln!(f)?;
        let a = &self.audit;
        let signed = match (a.head_seq, a.head_at_ms) {
            (Some(seq), Some(at)) => format!("signed head at entry {seq} ({})", format_time(at)),
            _ => "no readable signed head".to_owned(),
        };
        let office = if a.office.is_empty() {
            "(unknown)"
        } else {
            &a.office
        };
        writeln!(
            f,
            "Audit log of {office}: {signed}; {} of its entries concern this collection:",
            a.entries.len()
        )?;
        for e in &a.entries {
            writeln!(
                f,
                "  #{:<6} {}  {}  {}  [{}]  {}{}",
                e.seq,
                format_time(e.at_ms),
                e.actor,
                e.action,
                e.target,
                e.outcome,
                if e.checks_out {
                    ""
                } else {
                    "  FAILS ITS CHECKS"
                }
            )?;
        }
        if !self.notes.is_empty() {
            writeln!(f)?;
            writeln!(f, "Notes:")?;
            for note in &self.notes {
                writeln!(f, "  - {note}")?;
            }
        }
        writeln!(f)?;
        self.write_verdict(f)
    }
}
