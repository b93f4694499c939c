//! Refusals on a `Session` stream: the status a unary call would have returned, with its
//! metadata details moved into the fields of a [`SessionError`]. One builder, used by the
//! server and by test doubles, so the two paths cannot drift apart.

use tonic::Status;

use crate::metadata::{ERROR_CODE, HOLDER, HOLDER_TOKEN};
use crate::v1::SessionError;

/// The `SessionError` that carries `status` on a Session stream.
pub fn session_error(status: &Status) -> SessionError {
    let text = |key: &str| {
        status
            .metadata()
            .get(key)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    SessionError {
        code: status.code() as i32,
        message: status.message().to_string(),
        error_code: text(ERROR_CODE),
        holder: text(HOLDER),
        token: text(HOLDER_TOKEN).parse().unwrap_or(0),
    }
}
