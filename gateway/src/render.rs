//! Stored tickets and stats as the JSON the `/api` routes return: PETZI's own
//! field names, money as exact decimal strings.

use serde_json::{Value, json};
use ticketmesh_proto::v1::{Money, Stats, StoredTicket};

fn money(money: Option<&Money>) -> Value {
    money.map_or(Value::Null, |m| json!({"amount": m.decimal(), "currency": m.currency_code}))
}

fn rfc3339(ts: Option<&prost_types::Timestamp>) -> Value {
    ts.and_then(|t| std::time::SystemTime::try_from(*t).ok())
        .map_or(Value::Null, |t| Value::String(humantime::format_rfc3339_millis(t).to_string()))
}

pub fn ticket(stored: &StoredTicket) -> Value {
    let t = stored.ticket.clone().unwrap_or_default();
    let b = stored.buyer.clone().unwrap_or_default();
    let event = stored.last_event().petzi_name();
    json!({
        "number": t.number,
        "type": t.r#type,
        "title": t.title,
        "category": t.category,
        "eventId": t.event_id,
        "event": t.event,
        "cancellationReason": t.cancellation_reason,
        "sessions": t.sessions.iter().map(|s| {
            let l = s.location.clone().unwrap_or_default();
            json!({
                "name": s.name, "date": s.date, "time": s.time, "doors": s.doors,
                "location": {"name": l.name, "street": l.street, "city": l.city, "postcode": l.postcode},
            })
        }).collect::<Vec<_>>(),
        "promoter": t.promoter,
        "price": money(t.price.as_ref()),
        "buyer": {"role": b.role, "firstName": b.first_name, "lastName": b.last_name, "postcode": b.postcode},
        "lastEvent": event,
        "createdAt": rfc3339(stored.created_at.as_ref()),
        "updatedAt": rfc3339(stored.updated_at.as_ref()),
    })
}

pub fn stats(s: &Stats) -> Value {
    // serde_json's Map is ordered by key, so the output is stable.
    json!({
        "tickets": s.tickets,
        "averagePrice": money(s.average_price.as_ref()),
        "refundRate": s.refund_rate,
        "cancelledTickets": s.cancelled_tickets,
        "cancelledEvents": s.cancelled_events,
        "cancellationsByReason": s.cancellations_by_reason.iter()
            .map(|(reason, n)| (reason.clone(), json!(n)))
            .collect::<serde_json::Map<_, _>>(),
        "byCategory": s.by_category.iter().map(|(name, c)| {
            (name.clone(), json!({"tickets": c.tickets, "averagePrice": money(c.average_price.as_ref())}))
        }).collect::<serde_json::Map<_, _>>(),
    })
}
