//! The interceptor: a call without a listed token or a named client certificate is
//! refused with UNAUTHENTICATED (the tokens file's and the certificate's own tests are in
//! `fenced-types`).

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
