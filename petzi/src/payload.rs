//! The PETZI webhook payload as typed structs. [`Delivery::parse`] reads a
//! body strictly, and every rejection names the JSON path of the field at
//! fault; [`Delivery::to_body`] writes one as PETZI's sender does (its field
//! order, a space after every `:` and `,`), so what the simulator and the
//! tests send is signed exactly as a real delivery would be.
//!
//! The parser walks a `serde_json::Value` rather than deriving `Deserialize`:
//! it says "`details.ticket.eventId`: expected an integer, got a string"
//! where serde says "invalid type", it takes a repeated key's last value as
//! any JSON reader does, and it treats `null` as absent.

use std::{fmt, io};

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::text::quoted;

/// A real delivery, byte for byte: PETZI's own `ticket_created` example.
pub const EXAMPLE: &str = r#"{"event": "ticket_created", "details": {"ticket": {"number": "PETZI48213577", "type": "online_presale", "title": "Open-source concert night", "category": "Concert", "eventId": 4821, "event": "Case a Chocs", "cancellationReason": "", "sessions": [{"name": "Session at Sarl", "date": "2026-12-12", "time": "21:30:00", "doors": "20:30:00", "location": {"name": "Case a Chocs", "street": "Quai Philippe-Godet 20", "city": "Neuchatel", "postcode": "2000"}}], "promoter": "Jane Roe", "price": {"amount": "42.50", "currency": "CHF"}}, "buyer": {"role": "customer", "firstName": "John", "lastName": "Doe", "postcode": "2000"}}}"#;

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

/// One delivery: what happened to which ticket, bought by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub event: EventKind,
    pub details: Details,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    TicketCreated,
    TicketUpdated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Details {
    pub ticket: Ticket,
    pub buyer: Buyer,
}

/// The fields in PETZI's order, which is the order they are written in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ticket {
    /// Never blank.
    pub number: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub category: String,
    pub event_id: i64,
    pub event: String,
    /// "" when absent or null: not cancelled.
    pub cancellation_reason: String,
    pub sessions: Vec<Session>,
    pub promoter: String,
    pub price: Price,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub name: String,
    /// YYYY-MM-DD.
    pub date: String,
    /// HH:MM or HH:MM:SS, as are `doors`.
    pub time: String,
    pub doors: String,
    pub location: Location,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub name: String,
    pub street: String,
    pub city: String,
    pub postcode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Price {
    pub amount: Amount,
    /// An ISO 4217 code: three capital letters.
    pub currency: String,
}

/// A non-negative amount in whole cents, written "42.50".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amount {
    pub units: i64,
    /// 0..=99.
    pub cents: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Buyer {
    pub role: String,
    pub first_name: String,
    pub last_name: String,
    pub postcode: String,
}

impl Amount {
    /// "42.50" → 42 units 50 cents. Digits, at most 15 before the point and
    /// 2 after it, nothing else: no sign, exponent or space.
    pub fn parse(amount: &str) -> Option<Self> {
        let (whole, frac) = amount.split_once('.').unwrap_or((amount, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 15 || !digits(whole) || frac.len() > 2 || !digits(frac) {
            return None;
        }
        if amount.ends_with('.') {
            return None;
        }
        let units = whole.parse().ok()?;
        let cents = format!("{frac:0<2}").parse().ok()?;
        Some(Self { units, cents })
    }

    /// The cents as a `google.type.Money`'s nanos.
    pub fn nanos(self) -> i32 {
        i32::from(self.cents) * 10_000_000
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.units, self.cents)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Delivery {
    /// [`EXAMPLE`], parsed: a valid delivery to start a test's from.
    pub fn example() -> Self {
        Self::parse(EXAMPLE.as_bytes()).unwrap_or_else(|e| unreachable!("the example parses: {e}"))
    }

    pub fn parse(body: &[u8]) -> Result<Self, PayloadError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(PayloadError::InvalidJson("body is empty".into()));
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
        let root = Obj::root(&value)?;
        let event = match root.str("event")? {
            "ticket_created" => EventKind::TicketCreated,
            "ticket_updated" => EventKind::TicketUpdated,
            other => {
                return Err(PayloadError::field(
                    "event",
                    format!(
                        "unknown event {}; expected \"ticket_created\" or \"ticket_updated\"",
                        quoted(other)
                    ),
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
        Ok(Self { event, details: Details { ticket, buyer } })
    }

    /// The body as PETZI's sender writes it.
    pub fn to_body(&self) -> String {
        let mut out = serde_json::Serializer::with_formatter(Vec::new(), PetziSpacing);
        // Plain structs of strings and integers into memory: cannot fail.
        self.serialize(&mut out).unwrap_or_else(|e| unreachable!("a delivery serialises: {e}"));
        String::from_utf8(out.into_inner()).unwrap_or_else(|e| unreachable!("JSON is UTF-8: {e}"))
    }
}

/// The delivery id: hex SHA-256 of the raw body. A sender's retry carries the
/// same body (with a new signature), so it gets the same id.
pub fn delivery_id(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// serde_json's compact form with ", " and ": " separators.
struct PetziSpacing;

impl serde_json::ser::Formatter for PetziSpacing {
    fn begin_array_value<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(&mut self, writer: &mut W, first: bool) -> io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
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
        kind: t.string("type")?,
        title: t.string("title")?,
        category: t.string("category")?,
        event_id: t.integer("eventId")?,
        event: t.string("event")?,
        cancellation_reason: t.optional_string("cancellationReason")?,
        sessions,
        promoter: t.string("promoter")?,
        price: parse_price(&price)?,
    })
}

fn parse_session(s: &Obj<'_>) -> Result<Session, PayloadError> {
    let date = s.string("date")?;
    if !is_date(&date) {
        return Err(s.error("date", format!("expected a date YYYY-MM-DD, got {}", quoted(&date))));
    }
    let time = s.string("time")?;
    let doors = s.string("doors")?;
    for (key, value) in [("time", &time), ("doors", &doors)] {
        if !is_time_of_day(value) {
            return Err(s.error(key, format!("expected a time HH:MM or HH:MM:SS, got {}", quoted(value))));
        }
    }
    let location = s.obj("location")?;
    Ok(Session {
        name: s.string("name")?,
        date,
        time,
        doors,
        location: Location {
            name: location.string("name")?,
            street: location.string("street")?,
            city: location.string("city")?,
            postcode: location.string("postcode")?,
        },
    })
}

fn parse_price(price: &Obj<'_>) -> Result<Price, PayloadError> {
    let amount = price.str("amount")?;
    let amount = Amount::parse(amount).ok_or_else(|| {
        price.error(
            "amount",
            format!(
                "expected a decimal string with at most 2 decimal places, e.g. \"42.50\", got {}",
                quoted(amount)
            ),
        )
    })?;
    let currency = price.str("currency")?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(price.error(
            "currency",
            format!("expected an ISO 4217 code such as \"CHF\", got {}", quoted(currency)),
        ));
    }
    Ok(Price { amount, currency: currency.to_owned() })
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    // Digits only: `u32::from_str` would also take a sign ("+1").
    let num = |r: std::ops::Range<usize>| {
        s.get(r).filter(|p| p.bytes().all(|b| b.is_ascii_digit())).and_then(|p| p.parse::<u32>().ok())
    };
    match (num(0..4), num(5..7), num(8..10)) {
        (Some(_), Some(m), Some(d)) => (1..=12).contains(&m) && (1..=31).contains(&d),
        _ => false,
    }
}

fn is_time_of_day(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = |p: &str, max: u32| {
        p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().is_ok_and(|v| v <= max)
    };
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

    /// A string field. NUL is refused in every one: no PETZI text holds it,
    /// and PostgreSQL's text cannot store it.
    fn str(&self, key: &str) -> Result<&'a str, PayloadError> {
        match self.get(key)? {
            Value::String(s) if s.contains('\0') => Err(self.error(key, "must not contain NUL (\\u0000)")),
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

    fn with(edit: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v: Value = serde_json::from_str(EXAMPLE).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    fn field_of(body: &[u8]) -> String {
        Delivery::parse(body).unwrap_err().field_path().to_owned()
    }

    #[test]
    fn the_real_example_parses_into_every_field() {
        let d = Delivery::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(d.event, EventKind::TicketCreated);
        let t = &d.details.ticket;
        assert_eq!(t.number, "PETZI48213577");
        assert_eq!(t.kind, "online_presale");
        assert_eq!(t.category, "Concert");
        assert_eq!(t.event_id, 4821);
        assert_eq!(t.cancellation_reason, "");
        assert_eq!(t.promoter, "Jane Roe");
        assert_eq!(t.price, Price { amount: Amount { units: 42, cents: 50 }, currency: "CHF".into() });
        let s = &t.sessions[0];
        assert_eq!(
            (s.date.as_str(), s.time.as_str(), s.doors.as_str()),
            ("2026-12-12", "21:30:00", "20:30:00")
        );
        assert_eq!(s.location.postcode, "2000");
        assert_eq!(d.details.buyer.first_name, "John");
        assert_eq!(d.details.buyer.last_name, "Doe");
    }

    #[test]
    fn a_delivery_is_written_back_byte_for_byte_as_petzi_sends_it() {
        assert_eq!(Delivery::example().to_body(), EXAMPLE);
        let mut cancelled = Delivery::example();
        cancelled.event = EventKind::TicketUpdated;
        cancelled.details.ticket.cancellation_reason = "event_cancellation".into();
        cancelled.details.ticket.price.amount = Amount { units: 7, cents: 5 };
        let body = cancelled.to_body();
        assert!(body.starts_with(r#"{"event": "ticket_updated", "details": {"#), "{body}");
        assert!(body.contains(r#""amount": "7.05""#), "{body}");
        assert_eq!(Delivery::parse(body.as_bytes()), Ok(cancelled));
    }

    #[test]
    fn amounts_are_exact_and_strict() {
        let parsed = |s| Amount::parse(s).map(|a| (a.units, a.nanos()));
        assert_eq!(parsed("42.50"), Some((42, 500_000_000)));
        assert_eq!(parsed("0.05"), Some((0, 50_000_000)));
        assert_eq!(parsed("7"), Some((7, 0)));
        assert_eq!(parsed("19.9"), Some((19, 900_000_000)));
        assert_eq!(Amount::parse("19.9").map(|a| a.to_string()).as_deref(), Some("19.90"));
        for bad in ["", "abc", "4.2.1", "-1.00", "1.005", ".5", "5.", "1e3", " 1.00"] {
            assert_eq!(Amount::parse(bad), None, "{bad:?}");
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

    /// Found by `accepted_session_dates_and_times_are_well_formed`: a sign
    /// in a digit's place ("00:+0") used to pass, as `u32::from_str` takes it.
    #[test]
    fn a_sign_is_not_a_digit_in_dates_and_times() {
        for (key, bad) in [
            ("date", "2026-+1-12"),
            ("date", "+026-12-12"),
            ("date", "2026-12-+1"),
            ("time", "00:+0"),
            ("time", "+1:30:00"),
            ("doors", "20:30:+0"),
        ] {
            let body = with(|v| v["details"]["ticket"]["sessions"][0][key] = bad.into());
            assert_eq!(field_of(&body), format!("details.ticket.sessions[0].{key}"), "{bad}");
        }
    }

    #[test]
    fn not_json_and_not_an_object_differ() {
        assert!(matches!(Delivery::parse(b""), Err(PayloadError::InvalidJson(_))));
        assert!(matches!(Delivery::parse(b"{\"event\":"), Err(PayloadError::InvalidJson(_))));
        assert_eq!(field_of(b"[1,2]"), "$");
        let unknown = with(|v| v["event"] = "ticket_deleted".into());
        assert_eq!(field_of(&unknown), "event");
    }

    #[test]
    fn the_delivery_id_is_the_body_hash() {
        assert_eq!(delivery_id(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}

/// Properties over generated input: no body makes the parser panic; a valid
/// delivery with any field values parses and keeps them exactly; what is
/// accepted is well formed.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The keys the parser looks for, so generated objects reach into it.
    const KEYS: &[&str] = &[
        "event",
        "details",
        "ticket",
        "buyer",
        "number",
        "type",
        "title",
        "category",
        "eventId",
        "cancellationReason",
        "sessions",
        "name",
        "date",
        "time",
        "doors",
        "location",
        "street",
        "city",
        "postcode",
        "promoter",
        "price",
        "amount",
        "currency",
        "role",
        "firstName",
        "lastName",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter("JSON has no NaN or infinity", |f| f.is_finite()).prop_map(Value::from),
            any::<String>().prop_map(Value::from),
            prop_oneof![Just("ticket_created"), Just("ticket_updated"), Just("42.50"), Just("CHF")]
                .prop_map(Value::from),
        ];
        let key =
            prop_oneof![3 => proptest::sample::select(KEYS).prop_map(str::to_owned), 1 => any::<String>()];
        leaf.prop_recursive(6, 64, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(key.clone(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn example() -> Value {
        serde_json::from_str(EXAMPLE).unwrap()
    }

    /// Every path of the example, as keys and array indices.
    fn paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let children: Vec<(String, &Value)> = match value {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(items) => items.iter().enumerate().map(|(i, v)| (i.to_string(), v)).collect(),
            _ => vec![],
        };
        for (key, child) in children {
            prefix.push(key);
            out.push(prefix.clone());
            paths(child, prefix, out);
            prefix.pop();
        }
    }

    fn replace_at(value: &mut Value, path: &[String], new: Value) {
        let mut node = value;
        for key in path {
            node = match node {
                Value::Array(items) => &mut items[key.parse::<usize>().unwrap()],
                other => &mut other[key.as_str()],
            };
        }
        *node = new;
    }

    /// A valid PETZI amount of `units`.`cents`, spelt in each accepted way.
    fn amount() -> impl Strategy<Value = (String, i64, i32)> {
        (0i64..=999_999_999_999_999, 0i32..100, 0..3).prop_map(|(units, cents, spelling)| {
            let text = match spelling {
                1 if cents % 10 == 0 => format!("{units}.{}", cents / 10),
                2 if cents == 0 => units.to_string(),
                _ => format!("{units}.{cents:02}"),
            };
            (text, units, cents * 10_000_000)
        })
    }

    fn session() -> impl Strategy<Value = Value> {
        let clock = |seconds: bool| {
            (0u32..24, 0u32..60, 0u32..60).prop_map(move |(h, m, s)| {
                if seconds { format!("{h:02}:{m:02}:{s:02}") } else { format!("{h:02}:{m:02}") }
            })
        };
        (
            any::<String>(),
            (0u32..10_000, 1u32..=12, 1u32..=31).prop_map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}")),
            any::<bool>().prop_flat_map(clock),
            any::<bool>().prop_flat_map(clock),
            [any::<String>(), any::<String>(), any::<String>(), any::<String>()],
        )
            .prop_map(|(name, date, time, doors, [lname, street, city, postcode])| {
                json!({"name": name, "date": date, "time": time, "doors": doors,
                       "location": {"name": lname, "street": street, "city": city, "postcode": postcode}})
            })
    }

    /// What a generated document must parse to.
    #[derive(Debug, Clone)]
    struct Expected {
        event: EventKind,
        number: String,
        category: String,
        event_id: i64,
        units: i64,
        nanos: i32,
        currency: String,
        cancellation_reason: String,
        sessions: usize,
        first_name: String,
    }

    fn delivery() -> impl Strategy<Value = (Vec<u8>, Expected)> {
        let number = any::<String>().prop_filter("a number is not blank", |n| !n.trim().is_empty());
        let cancellation = prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            any::<String>().prop_map(|s| Some(Value::from(s)))
        ];
        (
            (any::<bool>(), number, any::<String>(), any::<i64>(), amount(), "[A-Z]{3}", cancellation),
            (proptest::collection::vec(session(), 0..3), proptest::array::uniform6(any::<String>()), 0..3),
        )
            .prop_map(
                |(
                    (updated, number, category, event_id, (amount, units, nanos), currency, cancellation),
                    (sessions, [kind, title, event, promoter, first_name, rest], layout),
                )| {
                    let mut ticket = json!({
                        "number": number, "type": kind, "title": title, "category": category,
                        "eventId": event_id, "event": event, "sessions": sessions, "promoter": promoter,
                        "price": {"amount": amount, "currency": currency},
                    });
                    let cancellation_reason = match &cancellation {
                        Some(Value::String(reason)) => reason.clone(),
                        _ => String::new(),
                    };
                    if let Some(value) = cancellation {
                        ticket["cancellationReason"] = value;
                    }
                    let event = if updated { EventKind::TicketUpdated } else { EventKind::TicketCreated };
                    let document = json!({
                        "event": if updated { "ticket_updated" } else { "ticket_created" },
                        "details": {"ticket": ticket, "buyer": {
                            "role": rest.clone(), "firstName": first_name, "lastName": rest.clone(), "postcode": rest,
                        }},
                    });
                    let body = match layout {
                        0 => serde_json::to_vec(&document).unwrap(),
                        1 => serde_json::to_vec_pretty(&document).unwrap(),
                        // Whitespace around the document too.
                        _ => [b" \n\t".as_slice(), &serde_json::to_vec_pretty(&document).unwrap(), b"\r\n"].concat(),
                    };
                    let expected = Expected {
                        event,
                        number: document["details"]["ticket"]["number"].as_str().unwrap().to_owned(),
                        category: document["details"]["ticket"]["category"].as_str().unwrap().to_owned(),
                        event_id,
                        units,
                        nanos,
                        currency: document["details"]["ticket"]["price"]["currency"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                        cancellation_reason,
                        sessions: document["details"]["ticket"]["sessions"].as_array().unwrap().len(),
                        first_name: document["details"]["buyer"]["firstName"].as_str().unwrap().to_owned(),
                    };
                    (body, expected)
                },
            )
    }

    /// An independent statement of the accepted session formats.
    fn digits(s: &str) -> Option<u32> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    }

    fn well_formed_date(s: &str) -> bool {
        let parts: Vec<&str> = s.split('-').collect();
        matches!(parts.as_slice(), [y, m, d]
            if y.len() == 4 && m.len() == 2 && d.len() == 2 && digits(y).is_some()
                && digits(m).is_some_and(|m| (1..=12).contains(&m))
                && digits(d).is_some_and(|d| (1..=31).contains(&d)))
    }

    fn well_formed_time(s: &str) -> bool {
        let two = |p: &&str, max: u32| p.len() == 2 && digits(p).is_some_and(|v| v <= max);
        match s.split(':').collect::<Vec<_>>().as_slice() {
            [h, m] => two(h, 23) && two(m, 59),
            [h, m, sec] => two(h, 23) && two(m, 59) && two(sec, 59),
            _ => false,
        }
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_fail_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Delivery::parse(&body);
        }

        /// Whatever the JSON, the parser answers; a schema error names a field.
        #[test]
        fn any_json_parses_or_names_a_field(value in json_value()) {
            let body = serde_json::to_vec(&value).unwrap();
            if let Err(PayloadError::InvalidField { field, .. }) = Delivery::parse(&body) {
                prop_assert!(!field.is_empty());
            }
        }

        /// The example with any one value (at any depth) replaced by any JSON:
        /// no panic, and a rejection names a field, never "not JSON".
        #[test]
        fn the_example_with_one_value_replaced_never_panics(
            at in any::<proptest::sample::Index>(),
            new in json_value(),
        ) {
            let mut document = example();
            let mut all = vec![];
            paths(&document, &mut vec![], &mut all);
            let path: &Vec<String> = at.get(&all);
            replace_at(&mut document, path, new);
            let result = Delivery::parse(&serde_json::to_vec(&document).unwrap());
            prop_assert!(!matches!(result, Err(PayloadError::InvalidJson(_))), "{:?}", result);
        }

        #[test]
        fn a_valid_delivery_keeps_its_values_exactly((body, expected) in delivery()) {
            let d = Delivery::parse(&body).map_err(|e| TestCaseError::fail(format!("{e} in {}", String::from_utf8_lossy(&body))))?;
            prop_assert_eq!(d.event, expected.event);
            let ticket = &d.details.ticket;
            prop_assert_eq!(&ticket.number, &expected.number);
            prop_assert_eq!(&ticket.category, &expected.category);
            prop_assert_eq!(ticket.event_id, expected.event_id);
            prop_assert_eq!(
                (ticket.price.amount.units, ticket.price.amount.nanos(), ticket.price.currency.as_str()),
                (expected.units, expected.nanos, expected.currency.as_str())
            );
            prop_assert_eq!(&ticket.cancellation_reason, &expected.cancellation_reason);
            prop_assert_eq!(ticket.sessions.len(), expected.sessions);
            prop_assert_eq!(&d.details.buyer.first_name, &expected.first_name);
        }

        /// What is parsed is written back to a body that parses to the same
        /// delivery: the one `Serialize` writes what the parser reads.
        #[test]
        fn a_parsed_delivery_written_back_parses_the_same((body, _) in delivery()) {
            let d = Delivery::parse(&body).unwrap();
            prop_assert_eq!(Delivery::parse(d.to_body().as_bytes()), Ok(d));
        }

        /// The parser is a function of the JSON value, not of its spelling.
        #[test]
        fn spacing_and_key_order_do_not_matter((body, _) in delivery()) {
            let value: Value = serde_json::from_slice(&body).unwrap();
            prop_assert_eq!(Delivery::parse(&serde_json::to_vec_pretty(&value).unwrap()), Delivery::parse(&body));
        }

        #[test]
        fn amounts_round_trip((text, units, nanos) in amount()) {
            prop_assert_eq!(Amount::parse(&text).map(|a| (a.units, a.nanos())), Some((units, nanos)));
        }

        /// An accepted amount is non-negative whole cents, whatever the string.
        #[test]
        fn accepted_amounts_are_whole_cents(text in prop_oneof![any::<String>(), "[-+0-9. e]{0,20}"]) {
            if let Some(amount) = Amount::parse(&text) {
                prop_assert!(amount.units >= 0 && amount.cents < 100);
                prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'), "{:?}", text);
                prop_assert!(text.matches('.').count() <= 1, "{:?}", text);
            }
        }

        /// Session dates and times near the format (signs, spaces, dashes in
        /// the digits' places), one field at a time: what is accepted is
        /// YYYY-MM-DD and HH:MM[:SS].
        #[test]
        fn accepted_session_dates_and_times_are_well_formed(
            date in prop_oneof!["[-+ 0-9]{4}-[-+ 0-9]{2}-[-+ 0-9]{2}", any::<String>()],
            time in prop_oneof!["[+ 0-9]{2}:[+ 0-9]{2}(:[+ 0-9]{2})?", any::<String>()],
        ) {
            let accepted = |key: &str, value: &str| {
                let mut document = example();
                document["details"]["ticket"]["sessions"][0][key] = value.into();
                Delivery::parse(&serde_json::to_vec(&document).unwrap()).is_ok()
            };
            if accepted("date", &date) {
                prop_assert!(well_formed_date(&date), "date {:?} was accepted", date);
            }
            for key in ["time", "doors"] {
                if accepted(key, &time) {
                    prop_assert!(well_formed_time(&time), "{} {:?} was accepted", key, time);
                }
            }
        }
    }
}
