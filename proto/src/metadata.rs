//! Names of the gRPC metadata keys that carry fencing information.

/// Request metadata: the writer's fencing token, as decimal text.
pub const FENCING_TOKEN: &str = "fencing-token";

/// Request metadata: the writer's sequencer (its fencing token signed by the lock server
/// with its lock), in its text form (unpadded base64url). A gate that verifies sequencers
/// (`fenced-kv --verify-keys`) demands it.
pub const FENCING_SEQUENCER: &str = "fencing-sequencer";

/// Response metadata on a refused sequencer: the kind of refusal (`required`,
/// `malformed`, `unsupported-version`, `unknown-key`, `bad-signature`, `other-lock`).
pub const SEQUENCER_REFUSED: &str = "fencing-sequencer-refused";

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

/// Response metadata on a refusal from a cluster member that is not the leader
/// (`fenced-error: not-leader`, gRPC status `UNAVAILABLE`): the leader's client address as
/// `host:port`, when the member knows it. The client reconnects there, with the scheme it
/// already uses, and sends the call again: a member that is not the leader changed nothing.
pub const LEADER: &str = "fenced-leader";

/// The [`ERROR_CODE`] of a refusal from a cluster member that is not the leader.
pub const NOT_LEADER_CODE: &str = "not-leader";

/// The [`ERROR_CODE`] of a `Watch` refused because the events from its start revision are
/// no longer kept on that member (gRPC status `OUT_OF_RANGE`): list the locks again and
/// watch from the list's revision + 1.
pub const COMPACTED_CODE: &str = "compacted";

/// Response metadata on a [`COMPACTED_CODE`] refusal: the oldest revision the member can
/// still send.
pub const OLDEST_REVISION: &str = "fenced-oldest-revision";
