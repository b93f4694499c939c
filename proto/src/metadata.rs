//! Names of the gRPC metadata keys that carry fencing information.

/// Request metadata: the writer's fencing token, as decimal text.
pub const FENCING_TOKEN: &str = "fencing-token";

/// Response metadata on a rejected write: the resource's current mark, as decimal text.
pub const FENCING_TOKEN_CURRENT: &str = "fencing-token-current";

/// Response metadata on a rejected write: the token that was presented, as decimal text.
pub const FENCING_TOKEN_PRESENTED: &str = "fencing-token-presented";
