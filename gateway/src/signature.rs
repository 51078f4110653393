//! The `Petzi-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<raw body>"`. Pure: parsing, constant-time verification, signing.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Petzi-Signature header is missing")]
    Missing,
    #[error("the Petzi-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature timestamp is {skew_secs} s from now; at most {tolerance_secs} s is accepted")]
    OutsideTolerance { skew_secs: i64, tolerance_secs: u64 },
    #[error("the signature does not match the body")]
    Mismatch,
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub timestamp: i64,
    pub v1: [u8; 32],
}

impl Signature {
    /// The request's header, if it has one: absent is `Missing`.
    pub fn from_header(header: Option<&str>) -> Result<Self, SignatureError> {
        Self::parse(header.ok_or(SignatureError::Missing)?)
    }

    /// Parses `t=<digits>,v1=<64 hex>`: exactly those two parts, once each.
    pub fn parse(header: &str) -> Result<Self, SignatureError> {
        let mut timestamp = None;
        let mut v1 = None;
        for part in header.split(',') {
            let (key, value) =
                part.trim().split_once('=').ok_or(SignatureError::Malformed("expected key=value parts"))?;
            match key {
                "t" if timestamp.is_none() => {
                    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(SignatureError::Malformed("t must be Unix seconds"));
                    }
                    timestamp = Some(
                        value.parse::<i64>().map_err(|_| SignatureError::Malformed("t is out of range"))?,
                    );
                }
                "v1" if v1.is_none() => {
                    let mut bytes = [0u8; 32];
                    hex::decode_to_slice(value, &mut bytes)
                        .map_err(|_| SignatureError::Malformed("v1 must be 64 hex digits"))?;
                    v1 = Some(bytes);
                }
                "t" | "v1" => return Err(SignatureError::Malformed("a part is repeated")),
                _ => return Err(SignatureError::Malformed("unknown part; expected only t and v1")),
            }
        }
        match (timestamp, v1) {
            (Some(timestamp), Some(v1)) => Ok(Self { timestamp, v1 }),
            (None, _) => Err(SignatureError::Malformed("t is missing")),
            (_, None) => Err(SignatureError::Malformed("v1 is missing")),
        }
    }
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

impl Signature {
    /// Checks this signature against the body: timestamp within
    /// `tolerance_secs` of `now` (either way), then the HMAC in constant time.
    pub fn verify(
        &self,
        secret: &[u8],
        body: &[u8],
        now: i64,
        tolerance_secs: u64,
    ) -> Result<(), SignatureError> {
        let skew = now.saturating_sub(self.timestamp);
        if skew.unsigned_abs() > tolerance_secs {
            return Err(SignatureError::OutsideTolerance { skew_secs: skew, tolerance_secs });
        }
        mac(secret, self.timestamp, body).verify_slice(&self.v1).map_err(|_| SignatureError::Mismatch)
    }
}

/// The header value a sender puts on `body` at `timestamp`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = r#"{"event": "ticket_created", "details": {"ticket": {"number": "PETZI48213577", "type": "online_presale", "title": "Open-source concert night", "category": "Concert", "eventId": 4821, "event": "Case a Chocs", "cancellationReason": "", "sessions": [{"name": "Session at Sarl", "date": "2026-12-12", "time": "21:30:00", "doors": "20:30:00", "location": {"name": "Case a Chocs", "street": "Quai Philippe-Godet 20", "city": "Neuchatel", "postcode": "2000"}}], "promoter": "Jane Roe", "price": {"amount": "42.50", "currency": "CHF"}}, "buyer": {"role": "customer", "firstName": "John", "lastName": "Doe", "postcode": "2000"}}}"#;
    /// Parses and verifies in one step, as the gateway does; the timestamp on success.
    fn verify(
        secret: &[u8],
        header: Option<&str>,
        body: &[u8],
        now: i64,
        tolerance_secs: u64,
    ) -> Result<i64, SignatureError> {
        let signature = Signature::from_header(header)?;
        signature.verify(secret, body, now, tolerance_secs)?;
        Ok(signature.timestamp)
    }

    const HEADER: &str = "t=1795000000,v1=782b73c5a61c5e067ca89e828a1595b24a297b1390da454b1eca0b243ca47a44";

    #[test]
    fn the_real_petzi_delivery_verifies_with_the_clock_at_t() {
        assert_eq!(verify(b"secret", Some(HEADER), BODY.as_bytes(), 1_795_000_000, 30), Ok(1_795_000_000));
        assert_eq!(sign(b"secret", 1_795_000_000, BODY.as_bytes()), HEADER);
    }

    #[test]
    fn tolerance_is_inclusive_and_symmetric() {
        let at = |now| verify(b"secret", Some(HEADER), BODY.as_bytes(), now, 30);
        assert!(at(1_795_000_030).is_ok());
        assert!(at(1_794_999_970).is_ok());
        assert!(matches!(at(1_795_000_031), Err(SignatureError::OutsideTolerance { skew_secs: 31, .. })));
        assert!(matches!(at(1_794_999_969), Err(SignatureError::OutsideTolerance { skew_secs: -31, .. })));
    }

    #[test]
    fn a_changed_body_or_secret_does_not_verify() {
        let now = 1_795_000_000;
        let changed = BODY.replace("42.50", "4.25");
        assert_eq!(
            verify(b"secret", Some(HEADER), changed.as_bytes(), now, 30),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(verify(b"other", Some(HEADER), BODY.as_bytes(), now, 30), Err(SignatureError::Mismatch));
    }

    #[test]
    fn malformed_headers_are_told_apart() {
        let v1 = "v1=782b73c5a61c5e067ca89e828a1595b24a297b1390da454b1eca0b243ca47a44";
        for (header, why) in [
            (v1.to_owned(), "t is missing"),
            ("t=1795000000".to_owned(), "v1 is missing"),
            ("t=1795000000,v1=zz".to_owned(), "v1 must be 64 hex digits"),
            (format!("t=abc,{v1}"), "t must be Unix seconds"),
            (format!("t=1795000000,{v1},x=1"), "unknown part; expected only t and v1"),
            (format!("t=1,t=2,{v1}"), "a part is repeated"),
            ("garbage".to_owned(), "expected key=value parts"),
        ] {
            assert_eq!(Signature::parse(&header), Err(SignatureError::Malformed(why)), "{header}");
        }
        assert_eq!(verify(b"s", None, b"", 0, 30), Err(SignatureError::Missing));
    }
}
