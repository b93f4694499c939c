//! The tokens file and the bearer check: a known token names its client, anything else is
//! refused with UNAUTHENTICATED, and a file that cannot be used is an error naming the line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tonic::Code;

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
    for refused in [
        None,
        Some(b"Bearer wrong".as_slice()),
        Some(b"Bearer ".as_slice()),
        Some(b"alice-secret".as_slice()),
        Some(b"Basic YWxpY2U6c2VjcmV0".as_slice()),
        Some(b"Bearer alice-secret ".as_slice()),
    ] {
        let status = auth.authenticate(refused).unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{refused:?}");
        assert_eq!(
            status.metadata().get(ERROR_CODE).unwrap(),
            UNAUTHENTICATED_CODE
        );
    }
}

// checks: A1
#[test]
fn the_interceptor_refuses_without_a_token_and_passes_everything_when_off() {
    let mut on = AuthLayer::new(Some(Arc::new(authenticator())), false);
    let refused = on.call(Request::new(())).unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut request = Request::new(());
    request
        .metadata_mut()
        .insert("authorization", "Bearer bob-secret".parse().unwrap());
    let passed = on.call(request).unwrap();
    assert_eq!(
        passed.extensions().get::<Identity>(),
        Some(&Identity(Arc::from("bob")))
    );
    let mut off = AuthLayer::new(None, false);
    assert!(off.call(Request::new(())).is_ok());
}

// checks: A1 (a file that cannot be used stops the server at start, naming the line)
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

fn certificate(alternative_names: &[&str], common_name: Option<&str>) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(
        alternative_names
            .iter()
            .map(|name| name.to_string())
            .collect::<Vec<_>>(),
    )
    .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(name) = common_name {
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
    }
    params.self_signed(&key).unwrap().der().to_vec()
}

// checks: A1 (a certificate names its client by its first alternative name, else its
// common name; one that names nobody, or does not parse, authenticates nobody)
#[test]
fn a_certificate_names_its_client_by_alternative_name_else_common_name() {
    let named = |name: &str| CertificateIdentity::Named(Identity(Arc::from(name)));
    assert_eq!(
        CertificateIdentity::of(&certificate(&["billing.example"], Some("ignored"))),
        named("billing.example")
    );
    assert_eq!(
        CertificateIdentity::of(&certificate(&[], Some("alice"))),
        named("alice")
    );
    assert!(matches!(
        CertificateIdentity::of(&certificate(&[], None)),
        CertificateIdentity::Unnamed(_)
    ));
    assert!(matches!(
        CertificateIdentity::of(b"not a certificate"),
        CertificateIdentity::Unnamed(_)
    ));
}
