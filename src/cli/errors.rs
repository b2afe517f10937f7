//! How a failed command is told to the person who ran it: one line that
//! says what happened and, where it helps, what to do; and an exit code
//! that says which kind of failure it was.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the node refused the operation, or a check failed |
//! | 2 | usage: the command line itself is wrong (clap uses 2 as well) |
//! | 3 | the node could not be reached, or did not accept the certificate |
//! | 130 | interrupted (Ctrl-C) |

use std::error::Error as StdError;

/// The exit codes above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Failed = 1,
    Usage = 2,
    Unreachable = 3,
    Interrupted = 130,
}

/// A failure the CLI itself decides, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An argument's value is wrong (exit 2).
    #[error("{0}")]
    Usage(String),
    /// A check ran and did not pass, or the node refused (exit 1). The
    /// message has been printed already, or is this one.
    #[error("{0}")]
    Failed(String),
    /// Ctrl-C (exit 130): what was and was not done.
    #[error("interrupted; {0}")]
    Interrupted(String),
    /// No node can be reached where the command looked (exit 3).
    #[error("{0}")]
    NotRunning(String),
}

/// A file named on the command line that cannot be read: a usage error
/// (exit 2), naming the option that gave it.
pub fn unreadable(
    option: &str,
    path: &std::path::Path,
    e: impl std::fmt::Display,
) -> anyhow::Error {
    CliError::Usage(format!("cannot read {option} {}: {e}", path.display())).into()
}

/// The line to print after `error: ` and the exit code, for any error a
/// command returned.
pub fn report(e: &anyhow::Error) -> (String, Exit) {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<CliError>() {
            let code = match c {
                CliError::Usage(_) => Exit::Usage,
                CliError::Failed(_) => Exit::Failed,
                CliError::Interrupted(_) => Exit::Interrupted,
                CliError::NotRunning(_) => Exit::Unreachable,
            };
            return (c.to_string(), code);
        }
    }
    let not_an_office = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<crate::config::ConfigError>(),
            Some(crate::config::ConfigError::Missing { .. })
        )
    });
    if not_an_office {
        return (chain_text(e), Exit::Usage);
    }
    if let Some(why) = connection_problem(e) {
        let endpoint = e.chain().find_map(|c| {
            c.downcast_ref::<crate::protocol::transport::ConnectError>()
                .and_then(|c| match c {
                    crate::protocol::transport::ConnectError::Connect { endpoint, .. } => {
                        Some(endpoint.clone())
                    }
                    _ => None,
                })
        });
        let text = match endpoint {
            Some(at) => format!("node {at}: {why}"),
            None => why,
        };
        return (text, Exit::Unreachable);
    }
    if let Some(status) = e.chain().find_map(|c| c.downcast_ref::<tonic::Status>()) {
        // Contexts the CLI added (which file, which step) come first.
        let context: Vec<String> = e
            .chain()
            .take_while(|c| c.downcast_ref::<tonic::Status>().is_none())
            .map(|c| c.to_string())
            .collect();
        let mut text = context.join(": ");
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&format!(
            "{} ({})",
            status.message(),
            crate::grpc::auth::code_name(status.code())
        ));
        return (text, Exit::Failed);
    }
    (chain_text(e), Exit::Failed)
}

/// An error and its causes as one line, leaving out any cause whose text
/// the line already holds (many errors quote their source).
pub fn chain_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Every error in a chain, looking inside `io::Error`s too (their
/// `source()` skips the error they wrap).
fn causes<'a>(e: &'a anyhow::Error) -> Vec<&'a (dyn StdError + 'static)> {
    let mut out = Vec::new();
    let mut stack: Vec<&(dyn StdError + 'static)> = e.chain().collect();
    stack.reverse();
    while let Some(c) = stack.pop() {
        out.push(c);
        if let Some(inner) = c
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            stack.push(inner);
        }
        if out.len() > 64 {
            break;
        }
    }
    out
}

/// Why the node could not be reached or would not talk to us, in words,
/// when that is what the error is about.
fn connection_problem(e: &anyhow::Error) -> Option<String> {
    use rustls::AlertDescription as A;
    use rustls::CertificateError as C;
    let all = causes(e);
    // Only what went wrong on the way to the node counts: the causes of a
    // failed connection, or of a call the transport broke. A local file's
    // I/O error is not the node's doing.
    let transport = all.iter().position(|c| {
        c.downcast_ref::<crate::protocol::transport::ConnectError>()
            .is_some()
            || c.downcast_ref::<tonic::transport::Error>().is_some()
            || c.downcast_ref::<tonic::Status>().is_some_and(|s| {
                s.source()
                    .is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some())
            })
    })?;
    let causes = &all[transport..];
    for c in causes {
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                rustls::Error::AlertReceived(A::CertificateRevoked) => {
                    "the node refused this certificate: it has been revoked".into()
                }
                rustls::Error::AlertReceived(A::UnknownCA) => {
                    "the node refused this certificate: it was not issued by this office's CA \
                     (is it another office's certificate?)"
                        .into()
                }
                rustls::Error::AlertReceived(A::AccessDenied) => {
                    "the node refused this certificate: it is not a user certificate this office \
                     issued (a node's certificate, or one the node has no record of)"
                        .into()
                }
                rustls::Error::AlertReceived(A::DecryptError | A::BadCertificate) => {
                    "the node refused this certificate: its signature does not check against \
                     this office's CA (one made by another CA under this office's name?)"
                        .into()
                }
                rustls::Error::AlertReceived(A::CertificateExpired) => {
                    "the node refused this certificate: it has expired".into()
                }
                rustls::Error::AlertReceived(other) => {
                    format!("the node refused the connection (TLS alert {other:?})")
                }
                rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                    "the node's certificate was not issued by the CA given (--ca, or the data \
                     directory's office-ca.pem): is this the right office's node?"
                        .into()
                }
                rustls::Error::InvalidCertificate(C::NotValidForName)
                | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => {
                    "the node's certificate does not name this host: use a host name or address \
                     given to `casemesh init --host`"
                        .into()
                }
                rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
                    "the node's certificate has expired".into()
                }
                other => format!("the TLS handshake with the node failed: {other}"),
            });
        }
    }
    for c in causes {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            let why = match io.kind() {
                K::ConnectionRefused => {
                    "nothing is listening there: is the node running at this address?"
                }
                K::TimedOut => "no answer in time: is the address right, and the port open?",
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    "the node closed the connection: is this a casemesh node?"
                }
                K::HostUnreachable | K::NetworkUnreachable => "the host cannot be reached",
                _ if io.to_string().contains("lookup") => "the host name does not resolve",
                _ => continue,
            };
            return Some(why.into());
        }
    }
    // The connection broke during a call: tonic reports the transport
    // error as the status's source.
    let status = causes
        .iter()
        .find_map(|c| c.downcast_ref::<tonic::Status>())?;
    let transport = status
        .source()
        .is_some_and(|s| s.downcast_ref::<tonic::transport::Error>().is_some());
    transport.then(|| format!("the connection to the node broke: {}", status.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_quoted_by_its_error_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file (os error 2)");
        let e = anyhow::Error::new(crate::config::ConfigError::Read {
            path: "x/casemesh.toml".into(),
            source: io,
        });
        let text = chain_text(&e);
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }

    #[test]
    fn usage_errors_exit_2_and_refusals_1() {
        let e = anyhow::Error::new(CliError::Usage("--for is too long".into()));
        assert_eq!(report(&e), ("--for is too long".into(), Exit::Usage));
        let e = anyhow::Error::new(tonic::Status::permission_denied("staff may not"))
            .context("cannot list users");
        assert_eq!(
            report(&e),
            (
                "cannot list users: staff may not (PERMISSION_DENIED)".into(),
                Exit::Failed
            )
        );
    }

    // A refused certificate (exit 3, the alert named) is shown through the
    // real transport by `tests/suite/cli_errors.rs` and `cli.rs`.

    #[test]
    fn a_local_io_error_is_not_blamed_on_the_node() {
        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank");
        let e = anyhow::Error::new(io).context("cannot read clip.mp4");
        let (text, code) = report(&e);
        assert_eq!(code, Exit::Failed);
        assert_eq!(text, "cannot read clip.mp4: file shrank");
    }
}
