//! The interceptor: a call without a listed token or a named client certificate is
//! refused with UNAUTHENTICATED (the tokens file's own tests are in `fenced-types`), and a
//! certificate names its client.

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
