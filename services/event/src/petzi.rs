//! The PETZI webhook payload: JSON → the typed `ticketmesh.v1` model. Pure
//! (no I/O); every rejection names the JSON path of the field at fault.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use ticketmesh_proto::v1::{Buyer, EventType, Location, Money, Session, Ticket};

/// Why a body is not a PETZI delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON at all (or empty).
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    /// JSON, but not the PETZI schema: `field` is the path, e.g. `details.ticket.eventId`.
    #[error("{field}: {problem}")]
    InvalidField { field: String, problem: String },
}

impl PayloadError {
    fn field(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::InvalidField { field: field.into(), problem: problem.into() }
    }

    /// The field at fault, or "" for a body that is not JSON.
    pub fn field_path(&self) -> &str {
        match self {
            Self::InvalidJson(_) => "",
            Self::InvalidField { field, .. } => field,
        }
    }
}

/// A parsed delivery: what happened to which ticket, bought by whom.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub event_type: EventType,
    pub ticket: Ticket,
    pub buyer: Buyer,
}

/// The delivery id: hex SHA-256 of the raw body. A sender's retry carries the
/// same body (with a new signature), so it gets the same id.
pub fn delivery_id(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

pub fn parse(body: &[u8]) -> Result<Delivery, PayloadError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(PayloadError::InvalidJson("body is empty".into()));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
    let root = Obj::root(&value)?;
    let event_type = match root.str("event")? {
        "ticket_created" => EventType::TicketCreated,
        "ticket_updated" => EventType::TicketUpdated,
        other => {
            return Err(PayloadError::field(
                "event",
                format!("unknown event {other:?}; expected \"ticket_created\" or \"ticket_updated\""),
            ));
        }
    };
    let details = root.obj("details")?;
    let ticket = parse_ticket(&details.obj("ticket")?)?;
    let buyer = details.obj("buyer")?;
    let buyer = Buyer {
        role: buyer.string("role")?,
        first_name: buyer.string("firstName")?,
        last_name: buyer.string("lastName")?,
        postcode: buyer.string("postcode")?,
    };
    Ok(Delivery { event_type, ticket, buyer })
}

fn parse_ticket(t: &Obj<'_>) -> Result<Ticket, PayloadError> {
    let number = t.string("number")?;
    if number.trim().is_empty() {
        return Err(t.error("number", "must not be empty"));
    }
    let sessions = t
        .array("sessions")?
        .iter()
        .enumerate()
        .map(|(i, v)| parse_session(&Obj::at(v, format!("{}.sessions[{i}]", t.path))?))
        .collect::<Result<Vec<_>, _>>()?;
    let price = t.obj("price")?;
    Ok(Ticket {
        number,
        r#type: t.string("type")?,
        title: t.string("title")?,
        category: t.string("category")?,
        event_id: t.integer("eventId")?,
        event: t.string("event")?,
        cancellation_reason: t.optional_string("cancellationReason")?,
        sessions,
        promoter: t.string("promoter")?,
        price: Some(parse_money(&price)?),
    })
}

fn parse_session(s: &Obj<'_>) -> Result<Session, PayloadError> {
    let date = s.string("date")?;
    if !is_date(&date) {
        return Err(s.error("date", format!("expected a date YYYY-MM-DD, got {date:?}")));
    }
    let time = s.string("time")?;
    let doors = s.string("doors")?;
    for (key, value) in [("time", &time), ("doors", &doors)] {
        if !is_time_of_day(value) {
            return Err(s.error(key, format!("expected a time HH:MM or HH:MM:SS, got {value:?}")));
        }
    }
    let location = s.obj("location")?;
    Ok(Session {
        name: s.string("name")?,
        date,
        time,
        doors,
        location: Some(Location {
            name: location.string("name")?,
            street: location.string("street")?,
            city: location.string("city")?,
            postcode: location.string("postcode")?,
        }),
    })
}

fn parse_money(price: &Obj<'_>) -> Result<Money, PayloadError> {
    let amount = price.str("amount")?;
    let (units, nanos) = parse_amount(amount).ok_or_else(|| {
        price.error(
            "amount",
            format!(
                "expected a decimal string with at most 2 decimal places, e.g. \"42.50\", got {amount:?}"
            ),
        )
    })?;
    let currency = price.str("currency")?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(
            price.error("currency", format!("expected an ISO 4217 code such as \"CHF\", got {currency:?}"))
        );
    }
    Ok(Money { currency_code: currency.to_owned(), units, nanos })
}

/// "42.50" → (42, 500_000_000). Non-negative, at most two decimals, exact.
pub fn parse_amount(amount: &str) -> Option<(i64, i32)> {
    let (whole, frac) = amount.split_once('.').unwrap_or((amount, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 15 || !digits(whole) || frac.len() > 2 || !digits(frac) {
        return None;
    }
    if amount.ends_with('.') {
        return None;
    }
    let units = whole.parse().ok()?;
    let cents: i32 = format!("{frac:0<2}").parse().ok()?;
    Some((units, cents * 10_000_000))
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|p| p.parse::<u32>().ok());
    match (num(0..4), num(5..7), num(8..10)) {
        (Some(_), Some(m), Some(d)) => (1..=12).contains(&m) && (1..=31).contains(&d),
        _ => false,
    }
}

fn is_time_of_day(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = |p: &str, max: u32| p.len() == 2 && p.parse::<u32>().is_ok_and(|v| v <= max);
    match parts.as_slice() {
        [h, m] => ok(h, 23) && ok(m, 59),
        [h, m, sec] => ok(h, 23) && ok(m, 59) && ok(sec, 59),
        _ => false,
    }
}

/// A JSON object with its path, so every error names the full field path.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn root(value: &'a Value) -> Result<Self, PayloadError> {
        match value {
            Value::Object(map) => Ok(Self { map, path: String::new() }),
            other => Err(PayloadError::field("$", format!("expected a JSON object, got {}", kind(other)))),
        }
    }

    fn at(value: &'a Value, path: String) -> Result<Self, PayloadError> {
        match value {
            Value::Object(map) => Ok(Self { map, path }),
            other => Err(PayloadError::field(path, format!("expected an object, got {}", kind(other)))),
        }
    }

    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    fn error(&self, key: &str, problem: impl Into<String>) -> PayloadError {
        PayloadError::field(self.path_of(key), problem)
    }

    fn get(&self, key: &str) -> Result<&'a Value, PayloadError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Err(self.error(key, "is required")),
            Some(v) => Ok(v),
        }
    }

    fn obj(&self, key: &str) -> Result<Obj<'a>, PayloadError> {
        Obj::at(self.get(key)?, self.path_of(key))
    }

    fn array(&self, key: &str) -> Result<&'a Vec<Value>, PayloadError> {
        match self.get(key)? {
            Value::Array(items) => Ok(items),
            other => Err(self.error(key, format!("expected an array, got {}", kind(other)))),
        }
    }

    fn str(&self, key: &str) -> Result<&'a str, PayloadError> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.error(key, format!("expected a string, got {}", kind(other)))),
        }
    }

    fn string(&self, key: &str) -> Result<String, PayloadError> {
        self.str(key).map(str::to_owned)
    }

    /// A string that may be absent or null (then empty).
    fn optional_string(&self, key: &str) -> Result<String, PayloadError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(_) => self.string(key),
        }
    }

    fn integer(&self, key: &str) -> Result<i64, PayloadError> {
        let value = self.get(key)?;
        value.as_i64().ok_or_else(|| self.error(key, format!("expected an integer, got {}", kind(value))))
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a decimal number",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The delivery of shared/petzi-example.md, byte for byte.
    pub const EXAMPLE: &str = r#"{"event": "ticket_created", "details": {"ticket": {"number": "PETZI48213577", "type": "online_presale", "title": "Open-source concert night", "category": "Concert", "eventId": 4821, "event": "Case a Chocs", "cancellationReason": "", "sessions": [{"name": "Session at Sarl", "date": "2026-12-12", "time": "21:30:00", "doors": "20:30:00", "location": {"name": "Case a Chocs", "street": "Quai Philippe-Godet 20", "city": "Neuchatel", "postcode": "2000"}}], "promoter": "Jane Roe", "price": {"amount": "42.50", "currency": "CHF"}}, "buyer": {"role": "customer", "firstName": "John", "lastName": "Doe", "postcode": "2000"}}}"#;

    fn with(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(EXAMPLE).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    fn field_of(body: &[u8]) -> String {
        parse(body).unwrap_err().field_path().to_owned()
    }

    #[test]
    fn the_real_example_parses_into_every_field() {
        let d = parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(d.event_type, EventType::TicketCreated);
        let t = &d.ticket;
        assert_eq!(t.number, "PETZI48213577");
        assert_eq!(t.r#type, "online_presale");
        assert_eq!(t.category, "Concert");
        assert_eq!(t.event_id, 4821);
        assert_eq!(t.cancellation_reason, "");
        assert_eq!(t.promoter, "Jane Roe");
        let price = t.price.as_ref().unwrap();
        assert_eq!((price.currency_code.as_str(), price.units, price.nanos), ("CHF", 42, 500_000_000));
        let s = &t.sessions[0];
        assert_eq!(
            (s.date.as_str(), s.time.as_str(), s.doors.as_str()),
            ("2026-12-12", "21:30:00", "20:30:00")
        );
        assert_eq!(s.location.as_ref().unwrap().postcode, "2000");
        assert_eq!(d.buyer.first_name, "John");
        assert_eq!(d.buyer.last_name, "Doe");
    }

    #[test]
    fn amounts_are_exact_and_strict() {
        assert_eq!(parse_amount("42.50"), Some((42, 500_000_000)));
        assert_eq!(parse_amount("0.05"), Some((0, 50_000_000)));
        assert_eq!(parse_amount("7"), Some((7, 0)));
        assert_eq!(parse_amount("19.9"), Some((19, 900_000_000)));
        for bad in ["", "abc", "4.2.1", "-1.00", "1.005", ".5", "5.", "1e3", " 1.00"] {
            assert_eq!(parse_amount(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn each_missing_field_is_named() {
        let cases: &[(&str, &[&str])] = &[
            ("event", &["event"]),
            ("details", &["details"]),
            ("details.ticket", &["details", "ticket"]),
            ("details.buyer", &["details", "buyer"]),
            ("details.ticket.number", &["details", "ticket", "number"]),
            ("details.ticket.eventId", &["details", "ticket", "eventId"]),
            ("details.ticket.price.amount", &["details", "ticket", "price", "amount"]),
            ("details.buyer.firstName", &["details", "buyer", "firstName"]),
        ];
        for (expected, path) in cases {
            let body = with(|v| {
                let (last, parents) = path.split_last().unwrap();
                let mut node = v;
                for p in parents {
                    node = node.get_mut(*p).unwrap();
                }
                node.as_object_mut().unwrap().remove(*last);
            });
            assert_eq!(field_of(&body), *expected);
        }
        let body = with(|v| {
            v["details"]["ticket"]["sessions"][0]["location"].as_object_mut().unwrap().remove("city");
        });
        assert_eq!(field_of(&body), "details.ticket.sessions[0].location.city");
    }

    #[test]
    fn wrong_types_are_named() {
        let id_as_string = with(|v| v["details"]["ticket"]["eventId"] = "4821".into());
        assert_eq!(field_of(&id_as_string), "details.ticket.eventId");
        let price_as_float = with(|v| v["details"]["ticket"]["price"]["amount"] = 42.5.into());
        assert_eq!(field_of(&price_as_float), "details.ticket.price.amount");
        let price_abc = with(|v| v["details"]["ticket"]["price"]["amount"] = "abc".into());
        assert_eq!(field_of(&price_abc), "details.ticket.price.amount");
        let bad_date = with(|v| v["details"]["ticket"]["sessions"][0]["date"] = "12.12.2026".into());
        assert_eq!(field_of(&bad_date), "details.ticket.sessions[0].date");
    }

    #[test]
    fn not_json_and_not_an_object_differ() {
        assert!(matches!(parse(b""), Err(PayloadError::InvalidJson(_))));
        assert!(matches!(parse(b"{\"event\":"), Err(PayloadError::InvalidJson(_))));
        assert_eq!(field_of(b"[1,2]"), "$");
        let unknown = with(|v| v["event"] = "ticket_deleted".into());
        assert_eq!(field_of(&unknown), "event");
    }

    #[test]
    fn the_delivery_id_is_the_body_hash() {
        assert_eq!(delivery_id(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
