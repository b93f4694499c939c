//! The policy file: rules grant a permission on a name, a prefix or every name, to one
//! identity or to all; nothing else is granted; a line it cannot use names its number.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const FILE: &str = "\
# IDENTITY PERMISSION PATTERN
alice lock  orders/*
alice read  orders/*     # alice's own service
bob   read  *
ops   admin *
carol lock  payroll/main
*     read  public/*
";

// checks: A2
#[test]
fn rules_grant_their_permission_on_their_names_and_nothing_else() {
    let policy = Policy::parse(FILE).unwrap();
    assert!(policy.allows("alice", Permission::Lock, "orders/1"));
    assert!(policy.allows("alice", Permission::Lock, "orders/"));
    assert!(!policy.allows("alice", Permission::Lock, "orders"));
    assert!(!policy.allows("alice", Permission::Lock, "payroll/main"));
    assert!(!policy.allows("alice", Permission::Admin, "orders/1"));
    assert!(
        policy.allows("alice", Permission::Read, "public/x"),
        "`*` rules apply to everyone"
    );
    assert!(policy.allows("bob", Permission::Read, "anything"));
    assert!(
        !policy.allows("bob", Permission::Lock, "anything"),
        "read does not imply lock"
    );
    assert!(policy.allows("carol", Permission::Lock, "payroll/main"));
    assert!(
        !policy.allows("carol", Permission::Lock, "payroll/main2"),
        "an exact name is exact"
    );
    assert!(
        !policy.allows("mallory", Permission::Read, "orders/1"),
        "unknown identities get only `*` rules"
    );
    assert!(policy.allows("mallory", Permission::Read, "public/y"));

    assert!(policy.allows_all("ops", Permission::Admin));
    assert!(policy.allows_all("bob", Permission::Read));
    assert!(!policy.allows_all("alice", Permission::Lock));

    assert!(policy.allows_some_under("alice", Permission::Read, ""));
    assert!(policy.allows_some_under("alice", Permission::Read, "ord"));
    assert!(policy.allows_some_under("alice", Permission::Read, "orders/5"));
    assert!(!policy.allows_some_under("alice", Permission::Read, "payroll/"));
    assert!(policy.allows_some_under("carol", Permission::Lock, "payroll/"));
    assert!(!policy.allows_some_under("carol", Permission::Lock, "payroll/mainx"));
}

// checks: A2
#[test]
fn an_empty_policy_grants_nothing() {
    let policy = Policy::parse("# nobody yet\n\n").unwrap();
    assert!(!policy.allows("alice", Permission::Read, "x"));
    assert!(!policy.allows_some_under("alice", Permission::Read, ""));
    assert!(!policy.allows_all("alice", Permission::Admin));
}

// checks: A2
#[test]
fn a_line_that_is_not_a_rule_is_refused_with_its_number() {
    for (text, line, says) in [
        ("alice lock\n", 1, "expected IDENTITY PERMISSION PATTERN"),
        (
            "alice lock a/* extra\n",
            1,
            "expected IDENTITY PERMISSION PATTERN",
        ),
        ("# ok\nalice write a/*\n", 2, "unknown permission \"write\""),
        ("alice lock a/*/b\n", 1, "`*` may only end a pattern"),
        ("alice lock a**\n", 1, "`*` may only end a pattern"),
        ("\n\nalice read a\u{7}b\n", 3, "control character"),
    ] {
        let (at, problem) = Policy::parse(text).unwrap_err();
        assert_eq!(at, line, "{text:?}: {problem}");
        assert!(problem.contains(says), "{text:?}: {problem}");
    }
    let long = format!("{} read *\n", "x".repeat(MAX_IDENTITY_BYTES + 1));
    assert!(Policy::parse(&long).unwrap_err().1.contains("identity"));
    let long = format!("alice read {}*\n", "x".repeat(MAX_PATTERN_BYTES));
    assert!(Policy::parse(&long).unwrap_err().1.contains("pattern"));
}

// checks: A2
#[test]
fn a_policy_file_is_bounded_and_its_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy");
    std::fs::write(&path, "alice read *\nalice lock\n").unwrap();
    let error = Policy::from_file(&path).unwrap_err().to_string();
    assert!(error.contains("line 2"), "{error}");
    assert!(error.contains(&path.display().to_string()), "{error}");

    let rules = "alice read *\n".repeat(MAX_RULES + 1);
    std::fs::write(&path, rules).unwrap();
    let error = Policy::from_file(&path).unwrap_err().to_string();
    assert!(
        error.contains(&format!("line {}", MAX_RULES + 1)),
        "{error}"
    );
    assert!(error.contains("more than"), "{error}");

    std::fs::write(&path, "#".repeat(MAX_POLICY_BYTES as usize + 1)).unwrap();
    let error = Policy::from_file(&path).unwrap_err();
    assert!(matches!(error, PolicyFileError::TooLarge { .. }), "{error}");

    let missing = Policy::from_file(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(missing, PolicyFileError::Read { .. }), "{missing}");
}
