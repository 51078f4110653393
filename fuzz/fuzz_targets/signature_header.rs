//! The `Petzi-Signature` header as the gateway reads it, then sign → verify
//! on a fuzzer-chosen secret, timestamp and body.

#![no_main]

use petzi::{Signature, SignatureError, sign};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"secret";
const BODY: &[u8] = br#"{"event": "ticket_created", "details": {}}"#;

fuzz_target!(|data: &[u8]| {
    // The gateway reads a header value that is not visible ASCII as "".
    let header = std::str::from_utf8(data).unwrap_or_default();
    match Signature::from_header(Some(header)) {
        Ok(signature) => {
            // Digits only: never negative. The canonical rendering reads back the same.
            assert!(signature.timestamp >= 0, "{header:?}");
            let tags: Vec<String> = signature.v1.iter().map(|tag| format!("v1={}", hex::encode(tag))).collect();
            let canonical = format!("t={},{}", signature.timestamp, tags.join(","));
            assert_eq!(Signature::parse(&canonical).as_ref(), Ok(&signature), "{header:?}");
            // It verifies exactly when one of its tags is the one `sign` writes.
            let expected = Signature::parse(&sign(SECRET, signature.timestamp, BODY)).expect("sign parses");
            let verdict = signature.verify(&[SECRET], BODY, signature.timestamp, 0);
            if signature.v1.contains(&expected.v1[0]) {
                assert_eq!(verdict, Ok(()));
            } else {
                assert_eq!(verdict, Err(SignatureError::Mismatch));
            }
            // One second past a zero tolerance is refused before the tag is looked at.
            if let Some(later) = signature.timestamp.checked_add(1) {
                assert!(matches!(
                    signature.verify(&[SECRET], BODY, later, 0),
                    Err(SignatureError::OutsideTolerance { skew_secs: 1, tolerance_secs: 0 })
                ));
            }
        }
        // A header that is there is either a signature or malformed.
        Err(SignatureError::Malformed(_)) => {}
        Err(other) => panic!("{header:?} gave {other:?}"),
    }

    // sign → verify round trip: the first byte picks the secret's length.
    let split = data.first().map_or(0, |b| usize::from(*b) % 80).min(data.len());
    let (secret, body) = data.split_at(split);
    let mut tail = [0u8; 8];
    for (t, b) in tail.iter_mut().zip(data.iter().rev()) {
        *t = *b;
    }
    let timestamp = (u64::from_le_bytes(tail) >> 1) as i64; // 0..=i64::MAX
    let header = sign(secret, timestamp, body);
    let signature = Signature::parse(&header).expect("what sign writes parses");
    assert_eq!(signature.timestamp, timestamp);
    assert_eq!(signature.verify(&[secret], body, timestamp, 30), Ok(()));
    let flip = data.first().map_or(1, |b| b | 1); // never 0
    if !body.is_empty() {
        let mut changed = body.to_vec();
        changed[timestamp as usize % body.len()] ^= flip;
        assert_eq!(signature.verify(&[secret], &changed, timestamp, 30), Err(SignatureError::Mismatch));
    }
    let mut forged = signature.clone();
    forged.v1[0][timestamp as usize % 32] ^= flip;
    assert_eq!(forged.verify(&[secret], body, timestamp, 30), Err(SignatureError::Mismatch));
});
