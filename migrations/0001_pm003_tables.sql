-- PM-003's order pipeline: the three tables the incident corrupted
-- (orders, inventory_reservations, fulfillment_records), the lots the
-- reservations draw from, and the append-only audit log that made the
-- reconciliation possible (order_events, inventory_events).
--
-- `fence` on an order is the highest fencing token that has written it: a
-- fenced writer checks its token against it (SELECT ... FOR UPDATE) in the
-- transaction that makes the change. `token` columns record the token a row
-- was written under, NULL when it was written without one (PM-003's path).

CREATE TABLE orders (
    order_id       text PRIMARY KEY,
    status         text NOT NULL CHECK (status IN ('PROCESSING', 'FULFILLED')),
    lot_id         text,
    fulfillment_id text,
    fence          bigint NOT NULL DEFAULT 0 CHECK (fence >= 0),
    updated_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE inventory_lots (
    lot_id        text PRIMARY KEY,
    initial_stock bigint NOT NULL,
    stock         bigint NOT NULL
);

CREATE TABLE inventory_reservations (
    reservation_id bigserial PRIMARY KEY,
    order_id       text NOT NULL REFERENCES orders (order_id),
    lot_id         text NOT NULL REFERENCES inventory_lots (lot_id),
    holder         text NOT NULL,
    token          bigint,
    state          text NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'released')),
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX inventory_reservations_order ON inventory_reservations (order_id);

CREATE TABLE fulfillment_records (
    fulfillment_id text PRIMARY KEY,
    order_id       text NOT NULL REFERENCES orders (order_id),
    lot_id         text NOT NULL,
    holder         text NOT NULL,
    token          bigint,
    state          text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'cancelled')),
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX fulfillment_records_order ON fulfillment_records (order_id);

-- The audit log. `kind` is `change` (a worker's write), `rejected` (a stale
-- holder's write refused by the fence: nothing else changed) or `repair`
-- (written by `warroom reconcile --repair`).
CREATE TABLE order_events (
    event_id   bigserial PRIMARY KEY,
    order_id   text NOT NULL,
    kind       text NOT NULL DEFAULT 'change' CHECK (kind IN ('change', 'rejected', 'repair')),
    event      text NOT NULL,  -- status, fulfillment_created, fulfillment_cancelled, ...
    value      text,           -- the new status, the fulfillment ID, ...
    holder     text NOT NULL,
    token      bigint,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX order_events_order ON order_events (order_id, event_id);

CREATE TABLE inventory_events (
    event_id   bigserial PRIMARY KEY,
    order_id   text NOT NULL,
    lot_id     text NOT NULL,
    kind       text NOT NULL DEFAULT 'change' CHECK (kind IN ('change', 'rejected', 'repair')),
    event      text NOT NULL,  -- reserved, released
    quantity   bigint NOT NULL, -- stock taken (+) or given back (-)
    holder     text NOT NULL,
    token      bigint,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX inventory_events_order ON inventory_events (order_id, event_id);

-- Append-only: an audit row is never changed or removed.
CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP;
END
$$;
CREATE TRIGGER order_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON order_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();
CREATE TRIGGER inventory_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON inventory_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();
