//! The one table that turns service errors into gRPC statuses. Internal
//! details (storage, signing) are logged here and never sent to the caller.

use tonic::Status;

use crate::domain::LimitError;
use crate::error::Error;

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let msg = e.to_string();
        match e {
            Error::InvalidId(_) | Error::InvalidArgument(_) => Status::invalid_argument(msg),
            Error::Limit(LimitError::TooLarge { .. }) | Error::BlobTooLarge { .. } => {
                Status::resource_exhausted(msg)
            }
            Error::Limit(_) => Status::invalid_argument(msg),
            Error::RecordNotFound(_)
            | Error::VersionNotFound { .. }
            | Error::UserNotFound(_)
            | Error::NotFound(_) => Status::not_found(msg),
            Error::VersionConflict { .. }
            | Error::AlreadyDeleted { .. }
            | Error::FailedPrecondition(_) => Status::failed_precondition(msg),
            Error::AlreadyExists(_) => Status::already_exists(msg),
            Error::Unavailable(_) => Status::unavailable(msg),
            Error::EmptyCollection(_) => Status::failed_precondition(msg),
            Error::NotOrigin { .. } => Status::permission_denied(msg),
            Error::UserExists(_) => Status::already_exists(msg),
            Error::Store(_) | Error::Identity(_) => {
                tracing::error!(error = %msg, "internal error");
                Status::internal("internal error; the node's log has the details")
            }
        }
    }
}

impl From<crate::sync::StreamError> for Status {
    fn from(e: crate::sync::StreamError) -> Self {
        use crate::sync::StreamError as E;
        let msg = e.to_string();
        match e {
            E::NoStart => Status::invalid_argument(msg),
            E::NotAPeer => Status::permission_denied(msg),
            E::EmptyLog | E::MissingEntry(_) => Status::failed_precondition(msg),
            E::Internal => Status::internal(msg),
            E::Service(e) => Status::from(e),
        }
    }
}

impl From<crate::protocol::convert::BadMessage> for Status {
    fn from(e: crate::protocol::convert::BadMessage) -> Self {
        Status::invalid_argument(e.0)
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

    #[test]
    fn each_error_maps_to_its_status() {
        let cases = [
            (Error::InvalidArgument("x".into()), Code::InvalidArgument),
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
