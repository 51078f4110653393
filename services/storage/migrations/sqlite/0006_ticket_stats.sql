-- The figures of GetStats, kept exact as tickets change instead of
-- aggregated over the whole table on each read: one row per (category,
-- currency, cancellation reason, cancelled event) with its ticket count and
-- price sum. `cancelled_event` is the ticket's event_id when it was cancelled
-- for an event cancellation, else 0. SQLite has one writer, so triggers keep
-- `ticket_stats` itself up to date; `ticket_stats_deltas` stays empty here (it
-- is PostgreSQL's append-only log of changes, see its twin migration) and
-- exists so that both backends are read with the same statement.

CREATE TABLE ticket_stats (
    category            TEXT   NOT NULL,
    currency            TEXT   NOT NULL,
    cancellation_reason TEXT   NOT NULL,
    cancelled_event     BIGINT NOT NULL,
    tickets             BIGINT NOT NULL,
    price_cents         BIGINT NOT NULL,
    PRIMARY KEY (category, currency, cancellation_reason, cancelled_event)
);

CREATE TABLE ticket_stats_deltas (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    category            TEXT   NOT NULL,
    currency            TEXT   NOT NULL,
    cancellation_reason TEXT   NOT NULL,
    cancelled_event     BIGINT NOT NULL,
    tickets             BIGINT NOT NULL,
    price_cents         BIGINT NOT NULL
);

CREATE TRIGGER tickets_stats_inserted AFTER INSERT ON tickets BEGIN
    INSERT INTO ticket_stats (category, currency, cancellation_reason, cancelled_event, tickets, price_cents)
    VALUES (NEW.category, NEW.currency, NEW.cancellation_reason,
            CASE WHEN NEW.cancellation_reason = 'event_cancellation' THEN NEW.event_id ELSE 0 END,
            1, NEW.price_cents)
    ON CONFLICT (category, currency, cancellation_reason, cancelled_event) DO UPDATE
    SET tickets = tickets + excluded.tickets, price_cents = price_cents + excluded.price_cents;
END;

CREATE TRIGGER tickets_stats_deleted AFTER DELETE ON tickets BEGIN
    UPDATE ticket_stats SET tickets = tickets - 1, price_cents = price_cents - OLD.price_cents
    WHERE category = OLD.category AND currency = OLD.currency AND cancellation_reason = OLD.cancellation_reason
      AND cancelled_event = CASE WHEN OLD.cancellation_reason = 'event_cancellation' THEN OLD.event_id ELSE 0 END;
END;

-- An update is the old row taken out and the new one put in.
CREATE TRIGGER tickets_stats_updated AFTER UPDATE ON tickets BEGIN
    UPDATE ticket_stats SET tickets = tickets - 1, price_cents = price_cents - OLD.price_cents
    WHERE category = OLD.category AND currency = OLD.currency AND cancellation_reason = OLD.cancellation_reason
      AND cancelled_event = CASE WHEN OLD.cancellation_reason = 'event_cancellation' THEN OLD.event_id ELSE 0 END;
    INSERT INTO ticket_stats (category, currency, cancellation_reason, cancelled_event, tickets, price_cents)
    VALUES (NEW.category, NEW.currency, NEW.cancellation_reason,
            CASE WHEN NEW.cancellation_reason = 'event_cancellation' THEN NEW.event_id ELSE 0 END,
            1, NEW.price_cents)
    ON CONFLICT (category, currency, cancellation_reason, cancelled_event) DO UPDATE
    SET tickets = tickets + excluded.tickets, price_cents = price_cents + excluded.price_cents;
END;

-- The tickets stored before this migration.
INSERT INTO ticket_stats (category, currency, cancellation_reason, cancelled_event, tickets, price_cents)
SELECT category, currency, cancellation_reason,
       CASE WHEN cancellation_reason = 'event_cancellation' THEN event_id ELSE 0 END, COUNT(*), SUM(price_cents)
FROM tickets GROUP BY 1, 2, 3, 4;

-- Listing by ticket type reads an index too (category and event_id have theirs).
CREATE INDEX tickets_ticket_type ON tickets (ticket_type, seq);
