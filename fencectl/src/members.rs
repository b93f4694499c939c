//! `members`, `add-member` and `remove-member`: a cluster's members through the SDK, as a
//! table or JSON.

use fenced_client::Members;

/// The members as a table: id, role, raft and client addresses, the leader marked.
pub fn table(members: &Members) -> String {
    let mut out = format!(
        "{:<4} {:<8} {:<24} {:<24}\n",
        "ID", "ROLE", "RAFT", "CLIENT"
    );
    for member in &members.members {
        let role = match (members.leader == Some(member.id), member.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        out.push_str(&format!(
            "{:<4} {:<8} {:<24} {:<24}\n",
            member.id, role, member.raft_addr, member.client_addr
        ));
    }
    out
}

/// The members as JSON: `{"leader": 1, "members": [{"id": 1, "voter": true, ...}]}`.
pub fn json(members: &Members) -> serde_json::Value {
    serde_json::json!({
        "leader": members.leader,
        "members": members.members.iter().map(|member| serde_json::json!({
            "id": member.id,
            "voter": member.voter,
            "raft_addr": member.raft_addr,
            "client_addr": member.client_addr,
        })).collect::<Vec<_>>(),
    })
}
