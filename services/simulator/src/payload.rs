//! Realistic PETZI deliveries: every field of a real `ticket_created`, Swiss
//! venues with their streets and postcodes, prices by category, and
//! `ticket_updated` cancellations of tickets created earlier. Pure and
//! seeded, so a run can be repeated exactly.

use petzi::{Amount, Buyer, Details, EventKind, Location, Price, Session, Ticket};

/// A small, fast, seeded generator (SplitMix64): enough for plausible data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

#[derive(Debug)]
struct Venue {
    name: &'static str,
    street: &'static str,
    city: &'static str,
    postcode: &'static str,
}

const VENUES: &[Venue] = &[
    Venue { name: "Case a Chocs", street: "Quai Philippe-Godet 20", city: "Neuchatel", postcode: "2000" },
    Venue {
        name: "Bikini Test",
        street: "Rue de la Joux-Perret 3",
        city: "La Chaux-de-Fonds",
        postcode: "2300",
    },
    Venue { name: "Rote Fabrik", street: "Seestrasse 395", city: "Zurich", postcode: "8038" },
    Venue { name: "Dachstock", street: "Neubrueckstrasse 8", city: "Bern", postcode: "3012" },
    Venue { name: "Kaserne Basel", street: "Klybeckstrasse 1b", city: "Basel", postcode: "4057" },
    Venue { name: "Fri-Son", street: "Route de la Fonderie 13", city: "Fribourg", postcode: "1705" },
    Venue { name: "Usine", street: "Place des Volontaires 4", city: "Geneve", postcode: "1204" },
    Venue { name: "Schueuer", street: "Tribschenstrasse 1", city: "Luzern", postcode: "6005" },
    Venue { name: "Kiff", street: "Tellistrasse 118", city: "Aarau", postcode: "5000" },
    Venue { name: "Salzhaus", street: "Untere Vogelsangstrasse 6", city: "Winterthur", postcode: "8400" },
    Venue { name: "Les Docks", street: "Avenue de Sevelin 34", city: "Lausanne", postcode: "1004" },
    Venue { name: "Palace", street: "Blumenbergplatz 1", city: "St. Gallen", postcode: "9000" },
];

/// Categories with the price range of a ticket in whole francs.
const CATEGORIES: &[(&str, u64, u64)] = &[
    ("Concert", 18, 65),
    ("Theater", 20, 55),
    ("Comedy Show", 25, 45),
    ("Art Exhibition", 8, 20),
    ("Dance Party", 12, 35),
];
const TYPES: &[&str] =
    &["online_presale", "online_presale", "online_presale", "door_sale", "early_bird", "vip_ticket"];
const ADJECTIVES: &[&str] =
    &["Electric", "Velvet", "Midnight", "Northern", "Silver", "Open-source", "Wild", "Quiet"];
const NOUNS: &[&str] =
    &["Lights", "Orchestra", "Foxes", "Collective", "Echoes", "Machines", "Tides", "Night"];
const FIRST: &[&str] = &["Anna", "Luca", "Mia", "Noah", "Lea", "Elias", "Chloe", "Julien", "Sara", "Marco"];
const LAST: &[&str] =
    &["Muller", "Favre", "Rossi", "Meier", "Bonvin", "Keller", "Rochat", "Bianchi", "Huber"];
/// Why a ticket is cancelled; event_cancellation is what the stats count as a cancelled event.
const REASONS: &[&str] = &["event_cancellation", "event_cancellation", "customer_request", "duplicate_order"];

/// One delivery: the exact body to sign and send.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub number: String,
    pub event: &'static str,
    pub body: String,
}

impl Delivery {
    /// `delivery` written as PETZI's sender writes it.
    fn of(delivery: &petzi::Delivery) -> Self {
        let event = match delivery.event {
            EventKind::TicketCreated => "ticket_created",
            EventKind::TicketUpdated => "ticket_updated",
        };
        Self { number: delivery.details.ticket.number.clone(), event, body: delivery.to_body() }
    }
}

/// Makes deliveries. Ticket numbers are unique within a run (the run id is
/// part of them), so separate runs never collide in one database.
#[derive(Debug)]
pub struct Generator {
    rng: Rng,
    run: u64,
    sequence: u64,
    /// Created tickets that may still be cancelled.
    created: Vec<petzi::Delivery>,
    cancel_ratio: f64,
}

impl Generator {
    /// `cancel_ratio`: share of deliveries that cancel an earlier ticket.
    pub fn new(seed: u64, run: u64, cancel_ratio: f64) -> Self {
        Self { rng: Rng::new(seed), run, sequence: 0, created: Vec::new(), cancel_ratio }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    pub fn next_delivery(&mut self) -> Delivery {
        if !self.created.is_empty() && self.rng.chance(self.cancel_ratio) {
            let index = self.rng.below(self.created.len() as u64) as usize;
            let mut cancelled = self.created.swap_remove(index);
            cancelled.event = EventKind::TicketUpdated;
            cancelled.details.ticket.cancellation_reason = (*self.rng.pick(REASONS)).to_owned();
            return Delivery::of(&cancelled);
        }
        self.sequence += 1;
        let created = self.ticket(format!("SIM{}{:06}", self.run, self.sequence));
        let delivery = Delivery::of(&created);
        // Bounded memory on long runs: keep a window of cancellable tickets.
        if self.created.len() >= 10_000 {
            let index = self.rng.below(self.created.len() as u64) as usize;
            self.created.swap_remove(index);
        }
        self.created.push(created);
        delivery
    }

    /// A new ticket that is not remembered: for a forged delivery, which the
    /// gateway refuses, so no later delivery may cancel it.
    pub fn next_forged(&mut self) -> Delivery {
        self.sequence += 1;
        Delivery::of(&self.ticket(format!("SIM{}{:06}", self.run, self.sequence)))
    }

    /// A new `ticket_created` delivery of ticket `number`.
    fn ticket(&mut self, number: String) -> petzi::Delivery {
        let rng = &mut self.rng;
        let venue = rng.pick(VENUES);
        let &(category, low, high) = rng.pick(CATEGORIES);
        let kind = *rng.pick(TYPES);
        let mut francs = low + rng.below(high - low + 1);
        if kind == "vip_ticket" {
            francs *= 2;
        } else if kind == "early_bird" {
            francs = francs * 4 / 5;
        }
        let cents = *rng.pick(&[0u8, 0, 50, 90]);
        let title = format!("{} {}", rng.pick(ADJECTIVES), rng.pick(NOUNS));
        let hour = 19 + rng.below(3);
        let location = Location {
            name: venue.name.into(),
            street: venue.street.into(),
            city: venue.city.into(),
            postcode: venue.postcode.into(),
        };
        let ticket = Ticket {
            number,
            kind: kind.into(),
            category: category.into(),
            event_id: 4000 + rng.below(900) as i64,
            event: venue.name.into(),
            cancellation_reason: String::new(),
            sessions: vec![Session {
                name: format!("{title} at {}", venue.name),
                date: format!("2027-{:02}-{:02}", 1 + rng.below(12), 1 + rng.below(28)),
                time: format!("{hour:02}:30:00"),
                doors: format!("{:02}:30:00", hour - 1),
                location,
            }],
            promoter: format!("{} {}", rng.pick(FIRST), rng.pick(LAST)),
            price: Price { amount: Amount { units: francs as i64, cents }, currency: "CHF".into() },
            title,
        };
        let buyer = Buyer {
            role: "customer".into(),
            first_name: (*rng.pick(FIRST)).into(),
            last_name: (*rng.pick(LAST)).into(),
            postcode: rng.pick(VENUES).postcode.into(),
        };
        petzi::Delivery { event: EventKind::TicketCreated, details: Details { ticket, buyer } }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_created_ticket_has_every_field_of_the_real_example() {
        let mut generator = Generator::new(7, 1, 0.0);
        let delivery = generator.next_delivery();
        let value: serde_json::Value = serde_json::from_str(&delivery.body).unwrap();
        let ticket = &value["details"]["ticket"];
        for field in
            ["number", "type", "title", "category", "eventId", "event", "cancellationReason", "promoter"]
        {
            assert!(!ticket[field].is_null(), "{field} missing in {}", delivery.body);
        }
        let session = &ticket["sessions"][0];
        for field in ["name", "date", "time", "doors"] {
            assert!(session[field].is_string(), "{field}");
        }
        for field in ["name", "street", "city", "postcode"] {
            assert!(session["location"][field].is_string(), "location {field}");
        }
        assert!(ticket["eventId"].is_u64());
        let amount = ticket["price"]["amount"].as_str().unwrap();
        let (francs, cents) = amount.split_once('.').unwrap();
        assert!(francs.parse::<u64>().unwrap() > 0 && cents.len() == 2, "{amount}");
        assert_eq!(ticket["price"]["currency"], "CHF");
        for field in ["role", "firstName", "lastName", "postcode"] {
            assert!(value["details"]["buyer"][field].is_string(), "buyer {field}");
        }
        assert!(
            delivery
                .body
                .starts_with("{\"event\": \"ticket_created\", \"details\": {\"ticket\": {\"number\": "),
            "PETZI's order and spacing: {}",
            delivery.body
        );
    }

    /// The keys of a body in the order they appear.
    fn keys(body: &str) -> Vec<String> {
        body.split('"')
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[1].starts_with(':'))
            .map(|w| w[0].to_owned())
            .collect()
    }

    #[test]
    fn bodies_have_the_fields_and_order_of_a_real_delivery() {
        let example = petzi::payload::EXAMPLE;
        let mut generator = Generator::new(3, 9, 0.5);
        for _ in 0..20 {
            assert_eq!(keys(&generator.next_delivery().body), keys(example));
        }
    }

    #[test]
    fn cancellations_update_tickets_created_before_with_a_reason() {
        let mut generator = Generator::new(11, 2, 0.3);
        let mut created = std::collections::HashSet::new();
        let mut cancelled = 0;
        for _ in 0..500 {
            let d = generator.next_delivery();
            let value: serde_json::Value = serde_json::from_str(&d.body).unwrap();
            let reason = value["details"]["ticket"]["cancellationReason"].as_str().unwrap().to_owned();
            if d.event == "ticket_updated" {
                assert!(created.contains(&d.number), "{} cancelled before it was created", d.number);
                assert!(!reason.is_empty());
                cancelled += 1;
            } else {
                assert!(reason.is_empty());
                assert!(created.insert(d.number.clone()), "{} created twice", d.number);
            }
        }
        assert!((100..200).contains(&cancelled), "about 30 % cancellations, got {cancelled}");
    }

    #[test]
    fn the_same_seed_gives_the_same_deliveries() {
        let bodies = |seed| {
            let mut g = Generator::new(seed, 3, 0.2);
            (0..50).map(|_| g.next_delivery().body).collect::<Vec<_>>()
        };
        assert_eq!(bodies(5), bodies(5));
        assert_ne!(bodies(5), bodies(6));
    }
}
