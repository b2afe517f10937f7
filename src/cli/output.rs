//! Output: aligned tables for people, JSON for scripts, and progress lines
//! on a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::protocol::pb;

/// A time for a table: RFC 3339 (UTC, milliseconds), `-` for none (0),
/// and any other value without panicking (`domain::time`).
pub fn time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    crate::domain::format_time(ms)
}

/// Prints rows under a header, columns padded to their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

/// Whether this node holds an attachment's bytes: `present`, or
/// `pending (X of Y bytes)` while a replica's file is being fetched.
pub fn attachment_state(a: &pb::Attachment) -> String {
    match a.state() {
        pb::AttachmentState::Present => "present".into(),
        pb::AttachmentState::Pending => {
            format!("pending ({} of {} bytes)", a.bytes_present, a.size)
        }
        pb::AttachmentState::Unspecified => "unknown".into(),
    }
}

pub use crate::domain::format_size as size;

pub fn record_row(r: &pb::Record) -> Vec<String> {
    vec![
        r.id.clone(),
        r.version.to_string(),
        r.collection.clone(),
        r.kind.clone(),
        r.title.clone(),
        time(r.updated_at_ms),
    ]
}

/// A record's subjects for a table cell: `kind=value` or
/// `kind@role=value`, space-separated.
pub fn subjects(r: &pb::Record) -> String {
    let each: Vec<String> = r
        .subjects
        .iter()
        .map(|s| match s.role.as_str() {
            "" => format!("{}={}", s.kind, s.value),
            role => format!("{}@{role}={}", s.kind, s.value),
        })
        .collect();
    each.join(" ")
}

pub const RECORD_HEADER: &[&str] = &["id", "version", "collection", "kind", "title", "updated"];

/// A transfer's progress as one line on stderr, redrawn in place: bytes
/// done, of how many when known, and the rate. Silent unless stderr is a
/// terminal, so that scripts and logs see nothing extra.
pub struct Progress {
    label: String,
    total: Option<u64>,
    /// Bytes that were already there (a resumed download); not counted in
    /// the rate.
    start: u64,
    done: u64,
    started: Instant,
    /// When the line was last drawn; the first draw waits one interval too,
    /// as a rate over the first few milliseconds means nothing.
    drawn_at: Instant,
    /// Whether the line is on screen and not yet ended.
    shown: bool,
    on: bool,
}

/// How often the line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(100);

impl Progress {
    pub fn new(label: impl Into<String>, total: Option<u64>, start: u64) -> Self {
        Self {
            label: label.into(),
            total,
            start,
            done: start,
            started: Instant::now(),
            drawn_at: Instant::now(),
            shown: false,
            on: std::io::stderr().is_terminal(),
        }
    }

    pub fn add(&mut self, bytes: u64) {
        self.done += bytes;
        if self.drawn_at.elapsed() >= REDRAW {
            self.draw();
        }
    }

    /// Draws the final figures and ends the line.
    pub fn finish(mut self) {
        self.draw();
        self.end_line();
    }

    fn draw(&mut self) {
        if !self.on {
            return;
        }
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 {
            ((self.done - self.start) as f64 / secs) as u64
        } else {
            0
        };
        let amount = match self.total {
            Some(total) if total > 0 => format!(
                "{} / {} ({}%)",
                size(self.done),
                size(total),
                self.done.min(total) * 100 / total
            ),
            _ => size(self.done),
        };
        // \r and "erase to end of line": the line is rewritten in place.
        eprint!("\r{}  {amount}  {}/s\x1b[K", self.label, size(rate));
        let _ = std::io::stderr().flush();
        self.drawn_at = Instant::now();
        self.shown = true;
    }

    fn end_line(&mut self) {
        if std::mem::take(&mut self.shown) {
            eprintln!();
        }
    }
}

impl Drop for Progress {
    /// An error message after an interrupted transfer starts on its own line.
    fn drop(&mut self) {
        self.end_line();
    }
}
