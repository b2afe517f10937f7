//! The one table that turns service errors into gRPC statuses. Internal
//! details (storage, signing) are logged here and never sent to the caller.

use tonic::Status;

use crate::domain::LimitError;
use crate::error::Error;

/// Longest message a status carries: it travels in an HTTP/2 trailer, and
/// errors may quote what the caller sent.
const MAX_MESSAGE: usize = 1024;

/// `e`'s text, at most [`MAX_MESSAGE`] bytes (cut on a character boundary
/// and marked).
fn message(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    if text.len() <= MAX_MESSAGE {
        return text;
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut)", &text[..end])
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let msg = message(&e);
        match e {
            Error::Limit(LimitError::TooLarge { .. })
            | Error::BlobTooLarge { .. }
            | Error::TooManyTransfers { .. }
            | Error::TooSoon { .. }
            | Error::VerifyRunning
            | Error::DiskFull(_) => Status::resource_exhausted(msg),
            Error::InvalidId(_)
            | Error::Limit(_)
            | Error::MissingField(_)
            | Error::BadEndpoint(_)
            | Error::BadFingerprint(_)
            | Error::BadCsr { .. }
            | Error::BadOfficeCa(_)
            | Error::PinSelf
            | Error::FingerprintMismatch { .. }
            | Error::ExpiryInPast
            | Error::ExpiryTooLate(_)
            | Error::VersionOnNewRecord(_)
            | Error::BadPageToken
            | Error::PageTokenForOtherFilters
            | Error::TimeRangeReversed
            | Error::BadSearch(_)
            | Error::AttachmentSize { .. }
            | Error::OffsetPastEnd { .. }
            | Error::AckParties(_)
            | Error::HeadOfAnotherOffice { .. } => Status::invalid_argument(msg),
            Error::RecordNotFound(_)
            | Error::VersionNotFound { .. }
            | Error::UserNotFound(_)
            | Error::PeerNotPinned(_)
            | Error::GrantNotFound(_)
            | Error::BlobNotStored(_)
            | Error::BlobNotShared(_) => Status::not_found(msg),
            Error::UserExists(_) | Error::PeerAlreadyPinned(_) => Status::already_exists(msg),
            Error::VersionConflict { .. }
            | Error::AlreadyDeleted { .. }
            | Error::FileNotUploaded { .. }
            | Error::LastAdmin(_)
            | Error::NotCurrentCertificate { .. }
            | Error::GrantEnded { .. }
            | Error::GrantStillActive(_)
            | Error::EmptyCollection(_)
            | Error::SearchTurnedOff => Status::failed_precondition(msg),
            Error::NotOrigin { .. } | Error::PeersOnly(_) => Status::permission_denied(msg),
            Error::AuditEntryUnreadable { .. }
            | Error::BlobDamaged { .. }
            | Error::AuditEntryMissing(_)
            | Error::AuditLogBroken(_) => Status::data_loss(msg),
            Error::RecordBusy { .. }
            | Error::ShuttingDown
            | Error::PeerUnreachable { .. }
            | Error::StorageFailed(_)
            | Error::BundleNotWritten(_)
            | Error::SearchUnavailable(_) => Status::unavailable(msg),
            Error::Store(_) | Error::Identity(_) | Error::Internal(_) => {
                tracing::error!(error = %msg, "internal error");
                Status::internal("internal error; the node's log has the details")
            }
        }
    }
}

impl From<crate::sync::StreamError> for Status {
    fn from(e: crate::sync::StreamError) -> Self {
        use crate::sync::StreamError as E;
        let msg = message(&e);
        match e {
            E::NoStart => Status::invalid_argument(msg),
            E::NotAPeer => Status::permission_denied(msg),
            E::AheadOfFeed { .. } => Status::failed_precondition(msg),
            E::RequeueTooSoon { .. } => Status::resource_exhausted(msg),
            E::AckBeyondSent { .. } | E::BadProofRange(_) => Status::invalid_argument(msg),
            E::Replaced => Status::aborted(msg),
            // The log a peer witnesses is not whole: its own data is lost.
            E::EmptyLog | E::MissingEntry(_) => Status::data_loss(msg),
            E::Internal => Status::internal(msg),
            E::Service(e) => Status::from(e),
        }
    }
}

impl From<super::auth::Refused> for Status {
    fn from(e: super::auth::Refused) -> Self {
        use super::auth::Refused as R;
        let msg = message(&e);
        match e {
            R::NoCertificate | R::NoCaller => Status::unauthenticated(msg),
            R::Certificate(_) | R::NotPermitted { .. } => Status::permission_denied(msg),
            R::NoAuditRecord | R::AuditUnwritable => Status::internal(msg),
        }
    }
}

impl From<crate::protocol::convert::BadMessage> for Status {
    fn from(e: crate::protocol::convert::BadMessage) -> Self {
        Status::invalid_argument(message(&e.0))
    }
}

/// tonic refuses a request message over the service's decoding limit
/// before any handler sees it, as `OUT_OF_RANGE` with a codec's wording.
/// For a person that is a body too large: this turns it into the
/// `RESOURCE_EXHAUSTED` the API promises, naming the limit they can act on.
pub fn oversized_request(status: &Status, path: &str, max_body_bytes: usize) -> Option<Status> {
    let tonic_wording = status.code() == tonic::Code::OutOfRange
        && status
            .message()
            .contains("decoded message length too large");
    if !tonic_wording {
        return None;
    }
    let hint = if path == "/casemesh.v1.Records/Put" {
        format!(
            "a record body may be at most {max_body_bytes} bytes on this node (limits.max_body_bytes); attach larger files instead (`casemesh record put --attach`)"
        )
    } else {
        "the request is larger than this node accepts".to_owned()
    };
    Some(Status::resource_exhausted(hint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    /// A message quoting a huge input is cut: it travels in a trailer.
    #[test]
    fn messages_quoting_input_are_cut() {
        let name = "é".repeat(100_000);
        let s = Status::from(Error::MissingField("x"));
        assert!(s.message().len() < 100);
        let long = Status::from(Error::InvalidId(crate::domain::IdError::User(name)));
        assert!(
            long.message().len() <= MAX_MESSAGE + 12,
            "{}",
            long.message().len()
        );
        assert!(long.message().ends_with("… (cut)"));
    }

    #[test]
    fn each_error_maps_to_its_status() {
        let office = crate::domain::OfficeId::parse("nyc-da").unwrap();
        let cases = [
            (Error::MissingField("name"), Code::InvalidArgument),
            (Error::PeerNotPinned(office.clone()), Code::NotFound),
            (
                Error::PeerAlreadyPinned(office.clone()),
                Code::AlreadyExists,
            ),
            (Error::LastAdmin("admin".into()), Code::FailedPrecondition),
            (Error::AuditEntryMissing(7), Code::DataLoss),
            (
                Error::PeerUnreachable {
                    peer: office,
                    reason: "down".into(),
                },
                Code::Unavailable,
            ),
            (Error::PeersOnly("pull"), Code::PermissionDenied),
            (
                Error::Limit(LimitError::TooLarge {
                    field: "body",
                    actual: 2,
                    limit: 1,
                }),
                Code::ResourceExhausted,
            ),
            (
                Error::Limit(LimitError::Empty("title")),
                Code::InvalidArgument,
            ),
            (Error::RecordNotFound("r".into()), Code::NotFound),
            (
                Error::VersionConflict {
                    id: "r".into(),
                    expected: 1,
                    actual: 2,
                },
                Code::FailedPrecondition,
            ),
            (
                Error::NotOrigin {
                    id: "r".into(),
                    origin: "o".into(),
                },
                Code::PermissionDenied,
            ),
            (Error::UserExists("a".into()), Code::AlreadyExists),
            (
                Error::Store(crate::store::StoreError::Flush("disk".into())),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
    }

    #[test]
    fn internal_details_are_not_sent() {
        let s = Status::from(Error::Store(crate::store::StoreError::Flush(
            "secret path".into(),
        )));
        assert!(!s.message().contains("secret path"));
    }
}
