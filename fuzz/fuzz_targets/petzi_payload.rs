//! The PETZI payload parser, on any body; what it accepts written back.

#![no_main]

use petzi::{Delivery, PayloadError, payload::delivery_id};
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
    let result = Delivery::parse(data);

    let id = delivery_id(data);
    assert!(id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));

    match &result {
        Ok(delivery) => {
            let ticket = &delivery.details.ticket;
            assert!(!ticket.number.trim().is_empty());
            let price = &ticket.price;
            assert!(price.amount.units >= 0 && price.amount.units < 1_000_000_000_000_000, "{price:?}");
            assert!(price.amount.cents < 100, "{price:?}");
            assert!(price.currency.len() == 3 && price.currency.bytes().all(|b| b.is_ascii_uppercase()));
            for session in &ticket.sessions {
                assert!(well_formed_date(&session.date), "date {:?} accepted", session.date);
                assert!(well_formed_time(&session.time), "time {:?} accepted", session.time);
                assert!(well_formed_time(&session.doors), "doors {:?} accepted", session.doors);
            }
            // What is accepted, written back as PETZI writes it, reads the same.
            assert_eq!(Delivery::parse(delivery.to_body().as_bytes()).as_ref(), Ok(delivery));
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
            assert_eq!(Delivery::parse(&again), result);
        }
        Err(_) => assert!(matches!(result, Err(PayloadError::InvalidJson(_))), "{result:?}"),
    }
});
