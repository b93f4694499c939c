//! Names of the gRPC metadata keys that carry fencing information.

/// Request metadata: the writer's fencing token, as decimal text.
pub const FENCING_TOKEN: &str = "fencing-token";

/// Response metadata on a rejected write: the resource's current mark, as decimal text.
pub const FENCING_TOKEN_CURRENT: &str = "fencing-token-current";

/// Response metadata on a rejected write: the token that was presented, as decimal text.
pub const FENCING_TOKEN_PRESENTED: &str = "fencing-token-presented";

/// Response metadata on every refusal of the lock service: a stable, machine-readable
/// code (`busy`, `lease-expired`, `wait-timed-out`, ...).
pub const ERROR_CODE: &str = "fenced-error";

/// Response metadata on a busy refusal: the lock's holder.
pub const HOLDER: &str = "fenced-holder";

/// Response metadata on a busy refusal: the holder's token, as decimal text.
pub const HOLDER_TOKEN: &str = "fenced-token";
