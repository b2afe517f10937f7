//! The status page: one server-rendered HTML document, its style inline,
//! refreshed by a `<meta>` tag. No script, no font, nothing fetched from
//! anywhere; nothing on it changes anything.
//!
//! Every string that came from outside this function — peers' errors,
//! audit entries written for any caller — is escaped. The page shows no
//! record's title or content; audit entries appear as the log has them
//! (case numbers, and record ids inside some outcome messages), for the
//! admins and auditors who may read the log anyway.

use std::fmt::Write as _;

use crate::domain::audit::Entry;
use crate::domain::sharing::{Grant, GrantTarget};
use crate::domain::time::format_time;

use super::observe::{CertKind, Snapshot, purge_pending};

/// `s`, safe inside HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// "3 s ago" (or "in 20 d"), with the exact time on hover.
fn ago(now_ms: u64, at_ms: u64) -> String {
    if at_ms == 0 {
        return "never".into();
    }
    let (d, suffix_before) = if at_ms <= now_ms {
        (now_ms - at_ms, false)
    } else {
        (at_ms - now_ms, true)
    };
    let s = d / 1000;
    let span = match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    };
    let text = if suffix_before {
        format!("in {span}")
    } else {
        format!("{span} ago")
    };
    format!(
        "<time title=\"{}\">{text}</time>",
        escape(&format_time(at_ms))
    )
}

/// A state in words and in colour: `ok`, `warn`, `bad` or `idle`.
fn state(class: &str, words: &str) -> String {
    format!("<span class=\"st {class}\">{}</span>", escape(words))
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .4em}
p.sub{color:#555;margin:0 0 1em}
table{border-collapse:collapse;background:#fff;min-width:40%}
th,td{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}
.st{padding:.05em .45em;border-radius:.3em;font-weight:600;white-space:nowrap}
.ok{background:#d8f3dc;color:#1b5e20}.warn{background:#fff3cd;color:#7a5200}
.bad{background:#f8d7da;color:#842029}.idle{background:#e9ecef;color:#41464b}
code{font-size:.95em}progress{width:8em}
";

/// The whole page.
pub fn render(s: &Snapshot, entries: &[Entry], refresh_secs: u64) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let office = escape(s.office.as_str());
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh_secs}\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>casemesh {office}</title><style>{STYLE}</style></head><body>\
         <h1>casemesh — {office}</h1>\
         <p class=\"sub\">Read only. As of {}; refreshed every {refresh_secs} s.</p>",
        escape(&format_time(s.at_ms))
    );
    office_table(&mut h, s);
    peers_table(&mut h, s);
    grants_table(&mut h, s);
    transfers_table(&mut h, s);
    audit_table(&mut h, s, entries);
    h.push_str("</body></html>");
    h
}

fn office_table(h: &mut String, s: &Snapshot) {
    h.push_str("<h2 id=\"office\">This office</h2><table>");
    let mut row = |k: &str, v: String| {
        let _ = write!(h, "<tr><th>{k}</th><td>{v}</td></tr>");
    };
    row("Office", escape(s.office.as_str()));
    row(
        "CA fingerprint",
        format!("<code>{}</code>", escape(&s.fingerprint)),
    );
    row(
        "Software",
        escape(concat!(
            env!("CARGO_PKG_VERSION"),
            " (",
            env!("CASEMESH_COMMIT"),
            ")"
        )),
    );
    let origins: Vec<String> = s
        .records_by_origin
        .iter()
        .map(|(o, n)| format!("{n} from {}", escape(o)))
        .collect();
    row(
        "Records",
        format!(
            "{} ({}); {} versions",
            s.records,
            origins.join(", "),
            s.versions
        ),
    );
    row("Files", format!("{} ({})", s.blobs, bytes(s.blob_bytes)));
    row(
        "Writes",
        match &s.writes_refused {
            None => state("ok", "accepted"),
            Some(why) => format!("{} {}", state("bad", "refused"), escape(why)),
        },
    );
    if let Some(free) = s.disk_free_bytes {
        row("Disk free", bytes(free));
    }
    for (kind, at) in &s.certificates {
        let what = match kind {
            CertKind::Node => "Node certificate".to_owned(),
            CertKind::OfficeCa => "Office CA".to_owned(),
            CertKind::PeerCa(p) => format!("CA of {}", escape(p.as_str())),
            CertKind::User(role) => format!("Earliest {role} certificate"),
        };
        let left = at.saturating_sub(s.at_ms);
        let class = match left {
            0 => "bad",
            l if l < 30 * 86_400_000 => "warn",
            _ => "ok",
        };
        row(
            &what,
            format!(
                "{} expires {}",
                state(class, if left == 0 { "expired" } else { "valid" }),
                ago(s.at_ms, *at)
            ),
        );
    }
    h.push_str("</table>");
}

fn peers_table(h: &mut String, s: &Snapshot) {
    h.push_str(
        "<h2 id=\"peers\">Peers</h2><table><tr><th>Office</th><th>Link</th>\
         <th>Last contact</th><th>Pending</th><th>Lag</th><th>Replicas held here</th>\
         <th>Purges pending</th><th>Last error</th></tr>",
    );
    if s.peers.is_empty() {
        h.push_str("<tr><td colspan=\"8\">No peer is pinned.</td></tr>");
    }
    for p in &s.peers {
        let link = if p.view.link.connected {
            state("ok", "connected")
        } else {
            state("bad", "not connected")
        };
        let lag = if p.lag_ms == 0 {
            "0 s".to_owned()
        } else {
            format!("{} s", p.lag_ms / 1000)
        };
        let purges = match p.purges_pending {
            0 => "0".to_owned(),
            n => format!(
                "{} since {}",
                state("warn", &format!("{n} pending")),
                ago(s.at_ms, p.oldest_purge_since_ms)
            ),
        };
        // Below the link's own error: what the peer could not take from
        // this office's feed.
        let mut errors = escape(&p.view.link.last_error);
        for r in &p.view.feed_rejections {
            let _ = write!(
                errors,
                "<div class=\"rejected\">{} {}</div>",
                state("bad", &r.describe()),
                ago(s.at_ms, r.at_ms)
            );
        }
        if p.view.feed_rejections_dropped > 0 {
            let _ = write!(
                errors,
                "<div class=\"rejected\">and {} earlier rejected versions (audit log: \
                 feed.rejected_by_peer)</div>",
                p.view.feed_rejections_dropped
            );
        }
        let _ = write!(
            h,
            "<tr class=\"peer\" data-office=\"{o}\"><td>{o}</td><td>{link}</td><td>{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{lag}</td><td class=\"n\">{}</td>\
             <td>{purges}</td><td>{errors}</td></tr>",
            ago(s.at_ms, p.view.link.last_contact_ms),
            p.view.outbox_pending,
            p.view.replicas,
            o = escape(p.view.peer.office.as_str()),
        );
    }
    h.push_str("</table>");
}

fn grant_state(now_ms: u64, g: &Grant) -> String {
    if g.is_active(now_ms) {
        return match g.expires_at_ms {
            0 => state("ok", "active"),
            at => format!("{} expires {}", state("ok", "active"), ago(now_ms, at)),
        };
    }
    let reason = g.end_reason.map_or("expired", |r| r.as_str());
    if let Some(ack) = &g.purge_ack {
        return format!(
            "{} {reason} {}; purged {}, confirmed by {}",
            state("idle", "purged"),
            ago(now_ms, g.ended_at_ms),
            ago(now_ms, ack.purged_at_ms),
            escape(ack.purged_by.as_str())
        );
    }
    if purge_pending(g) {
        return format!(
            "{} {reason} {}",
            state("warn", "purge pending"),
            ago(now_ms, g.ended_at_ms)
        );
    }
    if g.ended_at_ms == 0 {
        // Past its expiry; the sweeper ends it in a moment.
        return format!(
            "{} {}",
            state("warn", "expiring"),
            ago(now_ms, g.expires_at_ms)
        );
    }
    format!(
        "{} {reason} {}; its node can no longer be reached for a purge",
        state("idle", "ended"),
        ago(now_ms, g.ended_at_ms)
    )
}

fn grants_table(h: &mut String, s: &Snapshot) {
    h.push_str(
        "<h2 id=\"grants\">Grants</h2><table><tr><th>Grant</th><th>Peer</th><th>Shares</th>\
         <th>Made</th><th>State</th></tr>",
    );
    if s.grants.is_empty() {
        h.push_str("<tr><td colspan=\"5\">No grant has been made.</td></tr>");
    }
    // Every grant still in force or waiting for its purge, and the newest
    // of those done with: the page does not grow with years of grants.
    let mut done = 0;
    let shown = s.grants.iter().filter(|g| {
        let open = g.ended_at_ms == 0 || purge_pending(g);
        if !open {
            done += 1;
        }
        open || done <= ENDED_GRANTS_SHOWN
    });
    for g in shown {
        let target = match &g.target {
            GrantTarget::Collection(c) => format!("collection {}", escape(c)),
            GrantTarget::Record(_) => "one record".to_owned(),
        };
        let _ = write!(
            h,
            "<tr class=\"grant\" data-grant=\"{id}\"><td><code>{id}</code></td><td>{}</td>\
             <td>{target}</td><td>{}</td><td>{}</td></tr>",
            escape(g.peer.as_str()),
            ago(s.at_ms, g.created_at_ms),
            grant_state(s.at_ms, g),
            id = escape(g.id.as_str()),
        );
    }
    if done > ENDED_GRANTS_SHOWN {
        let _ = write!(
            h,
            "<tr><td colspan=\"5\">{} older grants, ended and purged, are not shown: \
             <code>casemesh share list</code> lists every grant.</td></tr>",
            done - ENDED_GRANTS_SHOWN
        );
    }
    h.push_str("</table>");
}

/// Files being fetched shown on the page; `casemesh status` lists all.
const TRANSFERS_SHOWN: usize = 50;

/// Grants that ended and need nothing more shown on the page, newest first.
const ENDED_GRANTS_SHOWN: usize = 20;

fn transfers_table(h: &mut String, s: &Snapshot) {
    h.push_str(
        "<h2 id=\"files\">Files being fetched</h2><table><tr><th>File</th><th>From</th>\
         <th>Progress</th><th>State</th></tr>",
    );
    if s.transfers.is_empty() {
        h.push_str("<tr><td colspan=\"4\">None.</td></tr>");
    }
    for t in s.transfers.iter().take(TRANSFERS_SHOWN) {
        let hash = t.hash.to_string();
        let st = if t.gave_up {
            format!("{} {}", state("bad", "gave up"), escape(&t.last_error))
        } else if t.active {
            state("ok", "receiving")
        } else if t.last_error.is_empty() {
            state("idle", "waiting")
        } else {
            format!("{} {}", state("warn", "retrying"), escape(&t.last_error))
        };
        let _ = write!(
            h,
            "<tr><td><code title=\"{hash}\">{}…</code></td><td>{}</td>\
             <td><progress max=\"{}\" value=\"{}\"></progress> {} of {}</td><td>{st}</td></tr>",
            escape(hash.get(..12).unwrap_or(&hash)),
            escape(&t.origin),
            t.size.max(1),
            t.received,
            bytes(t.received),
            bytes(t.size),
            hash = escape(&hash),
        );
    }
    if s.transfers.len() > TRANSFERS_SHOWN {
        let _ = write!(
            h,
            "<tr><td colspan=\"4\">and {} more: <code>casemesh status</code> lists them all.</td></tr>",
            s.transfers.len() - TRANSFERS_SHOWN
        );
    }
    h.push_str("</table>");
}

fn audit_table(h: &mut String, s: &Snapshot, entries: &[Entry]) {
    h.push_str("<h2 id=\"audit\">Audit log</h2><table>");
    let _ = write!(h, "<tr><th>Entries</th><td>{}</td></tr>", s.audit_entries);
    match &s.last_signed_head {
        Some(head) => {
            let age = s.at_ms.saturating_sub(head.at_ms);
            let class = if age > 15 * 60_000 { "warn" } else { "ok" };
            let _ = write!(
                h,
                "<tr><th>Last signed head</th><td>{} entry {}, <code>{}</code>, signed {}</td></tr>",
                state(class, "signed"),
                head.seq,
                hex::encode(&head.hash[..8]),
                ago(s.at_ms, head.at_ms)
            );
        }
        None => h.push_str(&format!(
            "<tr><th>Last signed head</th><td>{}</td></tr>",
            state("warn", "none yet")
        )),
    }
    let verified = match s.audit_verified_at_ms {
        0 => format!(
            "{} since this node started (<code>casemesh audit verify</code>)",
            state("idle", "not run")
        ),
        at => format!("{} {}", state("ok", "passed"), ago(s.at_ms, at)),
    };
    let _ = write!(
        h,
        "<tr><th>audit verify</th><td>{verified}</td></tr></table>"
    );
    h.push_str(
        "<h2 id=\"entries\">Latest audit entries</h2><table><tr><th>#</th><th>When</th>\
         <th>Who</th><th>Action</th><th>Concerning</th><th>Outcome</th></tr>",
    );
    for e in entries {
        let mut about = Vec::new();
        match e.target.records.len() {
            0 => {}
            1 => about.push("1 record".to_owned()),
            n => about.push(format!("{n} records")),
        }
        if !e.target.collection.is_empty() {
            about.push(format!("collection {}", escape(&e.target.collection)));
        }
        if !e.target.peer.is_empty() {
            about.push(format!("peer {}", escape(&e.target.peer)));
        }
        let outcome = if e.outcome.is_ok() {
            state("ok", "ok")
        } else {
            format!(
                "{} {}",
                state("bad", &e.outcome.code),
                escape(&e.outcome.message)
            )
        };
        let who = match e.actor.kind.as_str() {
            "user" => format!("{} ({})", escape(&e.actor.name), escape(&e.actor.role)),
            "peer" => format!("peer {}", escape(&e.actor.office)),
            other => format!("{} {}", escape(other), escape(&e.actor.remote)),
        };
        let _ = write!(
            h,
            "<tr><td class=\"n\">{}</td><td>{}</td><td>{who}</td><td><code>{}</code></td>\
             <td>{}</td><td>{outcome}</td></tr>",
            e.seq,
            ago(s.at_ms, e.at_ms),
            escape(&e.action),
            about.join(", "),
        );
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_strings_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    fn snapshot(grants: Vec<Grant>) -> Snapshot {
        use crate::domain::OfficeId;
        Snapshot {
            at_ms: 1_800_000_000_000,
            office: OfficeId::parse("phila-da").unwrap(),
            fingerprint: "sha256:00".into(),
            records_by_origin: vec![("phila-da".into(), 3)],
            records: 3,
            versions: 4,
            blobs: 0,
            blob_bytes: 0,
            transfers: Vec::new(),
            disk_free_bytes: None,
            writes_refused: Some("<img src=x onerror=alert(1)>".into()),
            peers: Vec::new(),
            grants,
            audit_entries: 9,
            last_signed_head: None,
            audit_verified_at_ms: 0,
            certificates: Vec::new(),
        }
    }

    fn grant(i: usize, ended: bool) -> Grant {
        use crate::domain::OfficeId;
        use crate::domain::sharing::{EndReason, GrantId, PurgeAck};
        let peer = OfficeId::parse("nyc-da").unwrap();
        Grant {
            id: GrantId::parse(&format!("g-{i:016x}")).unwrap(),
            peer: peer.clone(),
            target: GrantTarget::Collection(format!("<b>case-{i}</b>")),
            created_at_ms: 1_700_000_000_000 + i as u64,
            expires_at_ms: 0,
            ended_at_ms: if ended { 1_700_000_100_000 } else { 0 },
            end_reason: ended.then_some(EndReason::Revoked),
            purge_ack: ended.then(|| PurgeAck {
                grant: GrantId::parse(&format!("g-{i:016x}")).unwrap(),
                origin: OfficeId::parse("phila-da").unwrap(),
                purged_by: peer,
                purged_at_ms: 1_700_000_200_000,
                signature: Vec::new(),
            }),
        }
    }

    #[test]
    fn strings_from_outside_are_escaped_on_the_page() {
        let page = render(&snapshot(vec![grant(1, false)]), &[], 10);
        assert!(!page.contains("<b>case-1</b>") && page.contains("&lt;b&gt;case-1&lt;/b&gt;"));
        assert!(!page.contains("<img") && page.contains("&lt;img src=x"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
        assert!(!page.contains("<script"), "the page runs no script");
    }

    #[test]
    fn ended_grants_beyond_the_newest_are_counted_not_listed() {
        let mut grants: Vec<Grant> = (0..50).map(|i| grant(i, true)).collect();
        grants.push(grant(99, false));
        let page = render(&snapshot(grants), &[], 10);
        assert_eq!(
            page.matches("<tr class=\"grant\"").count(),
            ENDED_GRANTS_SHOWN + 1
        );
        assert!(page.contains("30 older grants, ended and purged, are not shown"));
    }

    /// What a peer could not take shows under its link's error, escaped:
    /// the reason is the peer's own words.
    #[test]
    fn a_peers_rejections_show_escaped_in_its_row() {
        use crate::domain::OfficeId;
        use crate::domain::rejection::FeedRejection;
        use crate::domain::sharing::Peer;
        use crate::service::sharing::PeerView;
        let origin = OfficeId::parse("phila-da").unwrap();
        let id = "phila-da:0190a1b2c3d4aaaaaaaaaaaaaaaaaaaa";
        let reported = FeedRejection::reported(&origin, 4, id, 2, "<b>too big</b>", 1);
        let older =
            FeedRejection::older_build(5, crate::domain::RecordId::parse(id).unwrap(), 3, 1);
        let mut s = snapshot(Vec::new());
        s.peers.push(super::super::observe::PeerState {
            view: PeerView {
                peer: Peer {
                    office: OfficeId::parse("nyc-da").unwrap(),
                    endpoint: "https://127.0.0.1:1".into(),
                    ca_der: Vec::new(),
                    added_at_ms: 1,
                },
                fingerprint: crate::identity::Fingerprint::of(&[]),
                link: Default::default(),
                checkpoint: 0,
                outbox_pending: 0,
                replicas: 0,
                feed_rejections: vec![older, reported],
                feed_rejections_dropped: 3,
            },
            lag_ms: 0,
            purges_pending: 0,
            oldest_purge_since_ms: 0,
            ca_expires_at_ms: 0,
        });
        let page = render(&s, &[], 10);
        assert!(!page.contains("<b>too big"), "{page}");
        assert!(page.contains(&format!(
            "rejected version 2 of {id}: &lt;b&gt;too big&lt;/b&gt;"
        )));
        assert!(page.contains("the peer runs an older casemesh that cannot read record versions"));
        assert!(page.contains("and 3 earlier rejected versions"));
        assert_eq!(page.matches("<div class=\"rejected\">").count(), 3);
    }

    #[test]
    fn times_read_as_spans_with_the_exact_time_on_hover() {
        let now = 1_800_000_000_000;
        let a = ago(now, now - 3_000);
        assert!(
            a.contains(">3 s ago<") && a.contains("title=\"2027-"),
            "{a}"
        );
        assert!(ago(now, now + 20 * 86_400_000).contains(">in 20 d<"));
        assert_eq!(ago(now, 0), "never");
    }
}
