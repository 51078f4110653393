//! A PETZI delivery as the `ticketmesh.v1` model: the `petzi` crate parses
//! it (every rejection names the field at fault), this maps it.

pub use petzi::{PayloadError, payload::delivery_id};
use ticketmesh_proto::v1::{Buyer, EventType, Location, Money, Session, Ticket};

/// A parsed delivery: what happened to which ticket, bought by whom.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub event_type: EventType,
    pub ticket: Ticket,
    pub buyer: Buyer,
}

pub fn parse(body: &[u8]) -> Result<Delivery, PayloadError> {
    petzi::Delivery::parse(body).map(Delivery::from)
}

impl From<petzi::Delivery> for Delivery {
    fn from(delivery: petzi::Delivery) -> Self {
        let petzi::Details { ticket: t, buyer: b } = delivery.details;
        let sessions = t
            .sessions
            .into_iter()
            .map(|s| Session {
                name: s.name,
                date: s.date,
                time: s.time,
                doors: s.doors,
                location: Some(Location {
                    name: s.location.name,
                    street: s.location.street,
                    city: s.location.city,
                    postcode: s.location.postcode,
                }),
            })
            .collect();
        Self {
            event_type: match delivery.event {
                petzi::EventKind::TicketCreated => EventType::TicketCreated,
                petzi::EventKind::TicketUpdated => EventType::TicketUpdated,
            },
            ticket: Ticket {
                number: t.number,
                r#type: t.kind,
                title: t.title,
                category: t.category,
                event_id: t.event_id,
                event: t.event,
                cancellation_reason: t.cancellation_reason,
                sessions,
                promoter: t.promoter,
                price: Some(Money {
                    currency_code: t.price.currency,
                    units: t.price.amount.units,
                    nanos: t.price.amount.nanos(),
                }),
            },
            buyer: Buyer {
                role: b.role,
                first_name: b.first_name,
                last_name: b.last_name,
                postcode: b.postcode,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_example_maps_to_every_field_of_the_model() {
        let d = parse(petzi::payload::EXAMPLE.as_bytes()).unwrap();
        assert_eq!(d.event_type, EventType::TicketCreated);
        let t = &d.ticket;
        assert_eq!(
            (t.number.as_str(), t.r#type.as_str(), t.title.as_str(), t.category.as_str()),
            ("PETZI48213577", "online_presale", "Open-source concert night", "Concert")
        );
        assert_eq!((t.event_id, t.event.as_str(), t.promoter.as_str()), (4821, "Case a Chocs", "Jane Roe"));
        assert_eq!(t.cancellation_reason, "");
        let price = t.price.as_ref().unwrap();
        assert_eq!((price.currency_code.as_str(), price.units, price.nanos), ("CHF", 42, 500_000_000));
        let s = &t.sessions[0];
        assert_eq!(
            (s.name.as_str(), s.date.as_str(), s.time.as_str(), s.doors.as_str()),
            ("Session at Sarl", "2026-12-12", "21:30:00", "20:30:00")
        );
        let l = s.location.as_ref().unwrap();
        assert_eq!(
            (l.name.as_str(), l.street.as_str(), l.city.as_str(), l.postcode.as_str()),
            ("Case a Chocs", "Quai Philippe-Godet 20", "Neuchatel", "2000")
        );
        let b = &d.buyer;
        assert_eq!(
            (b.role.as_str(), b.first_name.as_str(), b.last_name.as_str(), b.postcode.as_str()),
            ("customer", "John", "Doe", "2000")
        );
    }

    #[test]
    fn a_cancellation_maps_to_an_update_with_its_reason() {
        let mut delivery = petzi::Delivery::example();
        delivery.event = petzi::EventKind::TicketUpdated;
        delivery.details.ticket.cancellation_reason = "event_cancellation".into();
        let d = parse(delivery.to_body().as_bytes()).unwrap();
        assert_eq!(
            (d.event_type, d.ticket.cancellation_reason.as_str()),
            (EventType::TicketUpdated, "event_cancellation")
        );
    }

    #[test]
    fn a_rejection_keeps_the_field_path() {
        let error = parse(br#"{"event": "ticket_created", "details": {}}"#).unwrap_err();
        assert_eq!(error.field_path(), "details.ticket");
    }
}
