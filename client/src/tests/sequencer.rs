//! The grant's sequencer: kept with the lease, handed out and attached under the rules of
//! `fence()` (CONTRACT S4), and a grant whose sequencer does not match it refused.

use fenced_proto::metadata::{FENCING_SEQUENCER, FENCING_TOKEN};
use fenced_types::sequencer::SIGNATURE_BYTES;
use fenced_types::{FencingToken, KeyId, LockName, Sequencer};

use super::*;

/// A sequencer as a server would send it (the SDK checks its format, not its signature).
fn sequencer(lock: &str, token: u64) -> Sequencer {
    Sequencer::from_parts(
        LockName::new(lock).unwrap(),
        FencingToken::new(token).unwrap(),
        KeyId::new("k1").unwrap(),
        [9u8; SIGNATURE_BYTES],
    )
}

// checks: S4, S8
#[tokio::test]
async fn the_sequencer_is_handed_out_and_attached_only_while_held() {
    let (client, script, clock) = setup(ms(500)).await;
    let granted = sequencer("a", 7);
    script.lock().unwrap().sequencer = granted.encode();
    let lease = client
        .acquire("a", AcquireOptions::try_once().ttl(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(lease.fence_sequencer().unwrap(), Some(&granted));
    let request = lease.request("payload").unwrap();
    let attached = request.metadata().get(FENCING_SEQUENCER).unwrap();
    assert_eq!(attached.to_str().unwrap(), granted.to_text());
    assert_eq!(request.metadata().get(FENCING_TOKEN).unwrap(), "7");
    // After a pause: neither the sequencer nor a request carrying it.
    clock.advance(ms(2_000));
    assert!(matches!(
        lease.fence_sequencer(),
        Err(FenceError::Suspect { .. })
    ));
    let mut request = tonic::Request::new("payload");
    assert!(lease.attach(&mut request).is_err());
    assert!(request.metadata().get(FENCING_SEQUENCER).is_none());
}

// checks: S8
#[tokio::test]
async fn without_a_signing_server_there_is_no_sequencer() {
    let (client, _, _) = setup(ms(500)).await;
    let lease = client
        .acquire("a", AcquireOptions::try_once())
        .await
        .unwrap();
    assert_eq!(lease.fence_sequencer().unwrap(), None);
    let request = lease.request(()).unwrap();
    assert!(request.metadata().get(FENCING_SEQUENCER).is_none());
}

// A sequencer of another lock or token, or bytes that are none, make the grant unusable:
// the SDK says so and hands the grant back.
// checks: S8
#[tokio::test]
async fn a_grant_whose_sequencer_does_not_match_is_refused_and_handed_back() {
    let (client, script, _) = setup(ms(500)).await;
    for bad in [
        sequencer("other", 7).encode(),
        sequencer("a", 8).encode(),
        b"garbage".to_vec(),
    ] {
        script.lock().unwrap().sequencer = bad;
        let refused = client.acquire("a", AcquireOptions::try_once()).await;
        assert!(
            matches!(&refused, Err(Error::Protocol { what }) if what.contains("sequencer")),
            "{refused:?}"
        );
    }
    until("the grants are handed back", || {
        script.lock().unwrap().released.len() == 3
    })
    .await;
}
