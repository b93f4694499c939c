//! The tokens file and the bearer check: a known token names its client, anything else is
//! refused, and a file that cannot be used is an error naming the line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const ALICE: &str = "0c848abb03307b06cf70cd4e29c157dc81af5e94ab3eb1d0c59a120269572376";
const BOB: &str = "9f03ef1533a68d2f506f81ef463c1183a82a6bd40e45613f36e6fe1889cf1b99";

fn authenticator() -> Authenticator {
    Authenticator::parse(&format!(
        "# who may call\nalice {ALICE}\n\nbob {BOB}  # the batch jobs\n"
    ))
    .unwrap()
}

// checks: A1
#[test]
fn a_known_token_names_its_client_and_anything_else_is_refused() {
    let auth = authenticator();
    assert_eq!(
        auth.authenticate(Some(b"Bearer alice-secret")).unwrap(),
        Identity(Arc::from("alice"))
    );
    assert_eq!(
        auth.authenticate(Some(b"Bearer bob-secret")).unwrap(),
        Identity(Arc::from("bob"))
    );
    for (refused, why) in [
        (None, Unauthenticated::NoToken),
        (
            Some(b"Bearer wrong".as_slice()),
            Unauthenticated::UnknownToken,
        ),
        (Some(b"Bearer ".as_slice()), Unauthenticated::UnknownToken),
        (Some(b"alice-secret".as_slice()), Unauthenticated::NotBearer),
        (
            Some(b"Basic YWxpY2U6c2VjcmV0".as_slice()),
            Unauthenticated::NotBearer,
        ),
        (
            Some(b"Bearer alice-secret ".as_slice()),
            Unauthenticated::UnknownToken,
        ),
    ] {
        assert_eq!(auth.authenticate(refused), Err(why), "{refused:?}");
    }
}

// checks: A1 (a file that cannot be used stops the binary at start, naming the line)
#[test]
fn a_tokens_file_that_cannot_be_used_names_the_line() {
    for (text, line, words) in [
        ("alice\n", 1, "IDENTITY SHA256"),
        ("alice abc\n", 1, "64 hex digits"),
        (
            &format!("alice {ALICE} extra\n") as &str,
            1,
            "IDENTITY SHA256",
        ),
        (&format!("alice {ALICE}\nbob {ALICE}\n"), 2, "twice"),
        (&format!("# x\nal\u{7}ice {ALICE}\n"), 2, "printable"),
        (&format!("{} {ALICE}\n", "a".repeat(129)), 1, "at most 128"),
    ] {
        let (at, problem) = Authenticator::parse(text).map(|_| ()).unwrap_err();
        assert_eq!(at, line, "{text:?}");
        assert!(problem.contains(words), "{text:?}: {problem}");
    }
    let (at, _) = Authenticator::parse("# nobody\n").map(|_| ()).unwrap_err();
    assert_eq!(at, 0, "an empty file");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    std::fs::write(&path, "# nobody\n").unwrap();
    let error = Authenticator::from_file(&path).unwrap_err();
    assert!(error.to_string().contains("names no client"), "{error}");
    let missing = Authenticator::from_file(&dir.path().join("missing")).unwrap_err();
    assert!(missing.to_string().contains("cannot read"), "{missing}");
}

// checks: A1 (a minted token and its tokens-file line authenticate as their identity, and
// the line holds no token, only its digest)
#[test]
fn a_new_token_and_its_line_authenticate_as_the_identity() {
    let token = new_token().expect("the system's random source works");
    assert_eq!(token.len(), 64);
    assert_ne!(
        new_token().as_deref(),
        Some(token.as_str()),
        "tokens differ"
    );
    let line = tokens_file_line("carol", &token);
    assert!(!line.contains(&token), "{line}");
    // The digest `printf %s alice-secret | sha256sum` prints.
    assert_eq!(
        tokens_file_line("alice", "alice-secret"),
        "alice 0c848abb03307b06cf70cd4e29c157dc81af5e94ab3eb1d0c59a120269572376"
    );
    let authenticator = Authenticator::parse(&line).unwrap();
    let header = format!("Bearer {token}");
    assert_eq!(
        authenticator.authenticate(Some(header.as_bytes())),
        Ok(Identity("carol".into()))
    );
}
