//! The caller: without a policy everyone may do everything; with one, refusals are
//! PERMISSION_DENIED naming the identity, permission and name; holders begin with the
//! identity.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tonic::Code;

use super::*;

fn caller(identity: Option<&str>, policy: Option<&str>) -> Caller {
    Caller::new(
        identity.map(|name| Identity(Arc::from(name))),
        policy.map(|text| Arc::new(Policy::parse(text).unwrap())),
    )
}

// checks: A2
#[test]
fn without_a_policy_every_caller_may_do_everything() {
    for who in [None, Some("alice")] {
        let caller = caller(who, None);
        assert!(caller.check(Permission::Lock, "x").is_ok());
        assert!(caller.check_some_under(Permission::Read, "").is_ok());
        assert!(caller.check_all(Permission::Admin).is_ok());
    }
}

// checks: A2
#[test]
fn a_refusal_names_the_identity_the_permission_and_the_lock() {
    let caller = caller(Some("alice"), Some("alice lock a/*\n"));
    assert!(caller.check(Permission::Lock, "a/1").is_ok());
    let refused = caller.check(Permission::Lock, "b/1").unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(
        refused.metadata().get(ERROR_CODE).unwrap(),
        PERMISSION_DENIED_CODE
    );
    for part in ["alice", "lock", "\"b/1\""] {
        assert!(refused.message().contains(part), "{refused:?}");
    }
    let refused = caller.check_some_under(Permission::Read, "a/").unwrap_err();
    assert!(refused.message().contains("read"), "{refused:?}");
    let refused = caller.check_all(Permission::Admin).unwrap_err();
    assert!(refused.message().contains("admin"), "{refused:?}");
    let anonymous = Caller::new(None, Some(Arc::new(Policy::default())));
    assert!(anonymous.check(Permission::Read, "a/1").is_err());
}

// checks: A2
#[test]
fn the_holder_begins_with_the_identity_and_fits_the_limit() {
    let anonymous = caller(None, None);
    assert_eq!(&*anonymous.holder(Arc::from("w1"), 16).unwrap(), "w1");
    let alice = caller(Some("alice"), None);
    assert_eq!(&*alice.holder(Arc::from("w1"), 16).unwrap(), "alice/w1");
    assert_eq!(&*alice.holder(Arc::from(""), 16).unwrap(), "alice");
    assert_eq!(
        &*alice.holder(Arc::from("0123456789"), 16).unwrap(),
        "alice/0123456789"
    );
    let refused = alice.holder(Arc::from("0123456789a"), 16).unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("10 bytes for the label"),
        "{refused:?}"
    );
}
