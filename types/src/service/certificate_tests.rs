//! A client certificate names its client by its first alternative name, else its common
//! name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

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
