-- The figures of GetStats, kept exact as tickets change instead of
-- aggregated over the whole table on each read: one row per (category,
-- currency, cancellation reason, cancelled event) with its ticket count and
-- price sum. `cancelled_event` is the ticket's event_id when it was cancelled
-- for an event cancellation, else 0.
--
-- Several writers commit at once (writer tasks, replicas), so a shared
-- counter row updated in every write transaction would make them queue on its
-- lock (and could deadlock with the ticket row locks). Instead each statement
-- that changes tickets appends its net change to `ticket_stats_deltas`, in the
-- same transaction (statement triggers over the transition tables: one insert
-- of a few rows per statement, no row shared with another writer). Readers
-- add `ticket_stats` and the deltas; app-storage folds the deltas into
-- `ticket_stats` every second, so a read stays a few hundred rows at most.

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
    id                  BIGSERIAL PRIMARY KEY,
    category            TEXT   NOT NULL,
    currency            TEXT   NOT NULL,
    cancellation_reason TEXT   NOT NULL,
    cancelled_event     BIGINT NOT NULL,
    tickets             BIGINT NOT NULL,
    price_cents         BIGINT NOT NULL
);

-- The net change of one statement: its rows after, minus its rows before.
CREATE FUNCTION ticket_stats_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO ticket_stats_deltas (category, currency, cancellation_reason, cancelled_event, tickets, price_cents)
        SELECT category, currency, cancellation_reason,
               CASE WHEN cancellation_reason = 'event_cancellation' THEN event_id ELSE 0 END,
               COUNT(*), SUM(price_cents)
        FROM after GROUP BY 1, 2, 3, 4;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO ticket_stats_deltas (category, currency, cancellation_reason, cancelled_event, tickets, price_cents)
        SELECT category, currency, cancellation_reason,
               CASE WHEN cancellation_reason = 'event_cancellation' THEN event_id ELSE 0 END,
               -COUNT(*), -SUM(price_cents)
        FROM before GROUP BY 1, 2, 3, 4;
    ELSE
        INSERT INTO ticket_stats_deltas (category, currency, cancellation_reason, cancelled_event, tickets, price_cents)
        SELECT category, currency, cancellation_reason, cancelled_event, SUM(tickets), SUM(price_cents)
        FROM (
            SELECT category, currency, cancellation_reason,
                   CASE WHEN cancellation_reason = 'event_cancellation' THEN event_id ELSE 0 END AS cancelled_event,
                   1 AS tickets, price_cents
            FROM after
            UNION ALL
            SELECT category, currency, cancellation_reason,
                   CASE WHEN cancellation_reason = 'event_cancellation' THEN event_id ELSE 0 END,
                   -1, -price_cents
            FROM before
        ) AS change
        GROUP BY 1, 2, 3, 4 HAVING SUM(tickets) <> 0 OR SUM(price_cents) <> 0;
    END IF;
    RETURN NULL;
END $$;

-- Created before the existing tickets are counted: creating a trigger locks
-- out writers until this migration commits, so none is missed or counted twice.
CREATE TRIGGER tickets_stats_inserted AFTER INSERT ON tickets
    REFERENCING NEW TABLE AS after FOR EACH STATEMENT EXECUTE FUNCTION ticket_stats_record();
CREATE TRIGGER tickets_stats_updated AFTER UPDATE ON tickets
    REFERENCING OLD TABLE AS before NEW TABLE AS after FOR EACH STATEMENT EXECUTE FUNCTION ticket_stats_record();
CREATE TRIGGER tickets_stats_deleted AFTER DELETE ON tickets
    REFERENCING OLD TABLE AS before FOR EACH STATEMENT EXECUTE FUNCTION ticket_stats_record();

CREATE FUNCTION ticket_stats_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM ticket_stats;
    DELETE FROM ticket_stats_deltas;
    RETURN NULL;
END $$;
CREATE TRIGGER tickets_stats_truncated AFTER TRUNCATE ON tickets
    FOR EACH STATEMENT EXECUTE FUNCTION ticket_stats_truncated();

-- The tickets stored before this migration.
INSERT INTO ticket_stats (category, currency, cancellation_reason, cancelled_event, tickets, price_cents)
SELECT category, currency, cancellation_reason,
       CASE WHEN cancellation_reason = 'event_cancellation' THEN event_id ELSE 0 END, COUNT(*), SUM(price_cents)
FROM tickets GROUP BY 1, 2, 3, 4;

-- Listing by ticket type reads an index too (category and event_id have theirs).
CREATE INDEX tickets_ticket_type ON tickets (ticket_type, seq);
