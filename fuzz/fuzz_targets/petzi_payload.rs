//! The PETZI payload parser of the event service, on any body.

#![no_main]

use app_event::petzi::{PayloadError, delivery_id, parse};
use libfuzzer_sys::fuzz_target;

fn digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// YYYY-MM-DD, stated independently of the parser.
fn well_formed_date(s: &str) -> bool {
    match s.split('-').collect::<Vec<_>>().as_slice() {
        [y, m, d] => {
            y.len() == 4
                && m.len() == 2
                && d.len() == 2
                && digits(y).is_some()
                && digits(m).is_some_and(|m| (1..=12).contains(&m))
                && digits(d).is_some_and(|d| (1..=31).contains(&d))
        }
        _ => false,
    }
}

/// HH:MM or HH:MM:SS.
fn well_formed_time(s: &str) -> bool {
    let two = |p: &str, max: u32| p.len() == 2 && digits(p).is_some_and(|v| v <= max);
    match s.split(':').collect::<Vec<_>>().as_slice() {
        [h, m] => two(h, 23) && two(m, 59),
        [h, m, sec] => two(h, 23) && two(m, 59) && two(sec, 59),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let result = parse(data);

    let id = delivery_id(data);
    assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));

    match &result {
        Ok(delivery) => {
            let ticket = &delivery.ticket;
            assert!(!ticket.number.trim().is_empty());
            let price = ticket.price.as_ref().expect("a parsed ticket has a price");
            assert!(price.units >= 0 && price.units < 1_000_000_000_000_000, "{price:?}");
            assert!((0..1_000_000_000).contains(&price.nanos) && price.nanos % 10_000_000 == 0, "{price:?}");
            assert!(
                price.currency_code.len() == 3 && price.currency_code.bytes().all(|b| b.is_ascii_uppercase())
            );
            for session in &ticket.sessions {
                assert!(well_formed_date(&session.date), "date {:?} accepted", session.date);
                assert!(well_formed_time(&session.time), "time {:?} accepted", session.time);
                assert!(well_formed_time(&session.doors), "doors {:?} accepted", session.doors);
                assert!(session.location.is_some());
            }
        }
        Err(PayloadError::InvalidField { field, .. }) => assert!(!field.is_empty()),
        Err(PayloadError::InvalidJson(_)) => {}
    }

    // The parser is a function of the JSON value, not of its spelling: the
    // same value written again (compact, keys sorted, duplicates gone) parses
    // to the same delivery or the same error.
    match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(value) => {
            let again = serde_json::to_vec(&value).expect("a Value serialises");
            assert_eq!(parse(&again), result);
        }
        Err(_) => assert!(matches!(result, Err(PayloadError::InvalidJson(_))), "{result:?}"),
    }
});
