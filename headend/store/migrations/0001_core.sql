-- Core inventory, quantities, events, per-cycle read statistics and the append-only audit log.

CREATE TABLE headend_settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Group roles (NOLOGIN): deployments create login users and GRANT these to them.
DO $$
DECLARE r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['headend_daemon', 'headend_billing', 'headend_reporting'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END $$;

CREATE TABLE channels (
    id         serial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    kind       text NOT NULL CHECK (kind IN ('serial', 'tcp')),
    address    text NOT NULL,                       -- device path or host:port
    settings   jsonb NOT NULL DEFAULT '{}'::jsonb,  -- baud, parity, timeouts, inter-frame gap ...
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tariffs (
    id         serial PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    kind       text NOT NULL CHECK (kind IN ('flat', 'tou')),
    currency   text NOT NULL DEFAULT 'CNY',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Price per tariff register ('total' for flat, 't1'..'t4' for time-of-use), valid from a date.
CREATE TABLE tariff_prices (
    tariff_id      integer NOT NULL REFERENCES tariffs(id) ON DELETE CASCADE,
    register       text NOT NULL,
    price          numeric(12, 6) NOT NULL CHECK (price >= 0),
    effective_from timestamptz NOT NULL,
    PRIMARY KEY (tariff_id, register, effective_from)
);

CREATE TABLE accounts (
    id                bigserial PRIMARY KEY,
    number            text NOT NULL UNIQUE,
    name              text NOT NULL DEFAULT '',
    kind              text NOT NULL CHECK (kind IN ('prepaid', 'postpaid')),
    tariff_id         integer REFERENCES tariffs(id),
    credit_limit      numeric(14, 2) NOT NULL DEFAULT 0,
    grace_days        integer NOT NULL DEFAULT 0 CHECK (grace_days >= 0),
    protected         boolean NOT NULL DEFAULT false,   -- medical / critical load: never cut automatically
    protected_reason  text,
    arrears           boolean NOT NULL DEFAULT false,
    arrears_since     timestamptz,
    notice_sent_at    timestamptz,
    active            boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE meters (
    id               serial PRIMARY KEY,
    name             text,
    protocol         text NOT NULL CHECK (protocol IN ('dlt645-2007', 'dlt645-1997', 'modbus')),
    address          text NOT NULL,                     -- DL/T 645: 12 BCD digits; Modbus: unit id as text
    unit_id          smallint CHECK (unit_id BETWEEN 0 AND 255),
    model            text NOT NULL,
    channel_id       integer NOT NULL REFERENCES channels(id),
    account_id       bigint REFERENCES accounts(id),
    protected        boolean NOT NULL DEFAULT false,    -- never disconnected automatically
    protected_reason text,
    has_relay        boolean NOT NULL DEFAULT false,
    multiplier       numeric(12, 4) NOT NULL DEFAULT 1, -- CT x PT ratio applied to energy registers
    enabled          boolean NOT NULL DEFAULT true,
    installed_at     timestamptz NOT NULL DEFAULT now(),
    removed_at       timestamptz,
    settings         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX meters_channel_address_key ON meters (channel_id, protocol, address, coalesce(unit_id, -1));
CREATE INDEX meters_account_idx ON meters (account_id) WHERE account_id IS NOT NULL;

-- Canonical quantity names (energy_import_kwh, voltage_a_v, ...) mapped to small ids for readings.
CREATE TABLE quantities (
    id   smallserial PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_]*$'),
    unit text
);

-- Where a reading came from (poll, profile, freeze, import, ...), mapped to small ids.
CREATE TABLE reading_sources (
    id   smallserial PRIMARY KEY,
    name text NOT NULL UNIQUE CHECK (name <> '')
);

CREATE TYPE reading_quality AS ENUM ('actual', 'backfilled', 'freeze', 'estimated', 'suspect', 'missing');

-- Meter events (power down, relay trip/close, cover open ...) and communication events (timeouts ...).
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    category    text NOT NULL CHECK (category IN ('meter', 'comm')),
    kind        text NOT NULL,
    meter_id    integer REFERENCES meters(id),
    channel_id  integer REFERENCES channels(id),
    occurred_at timestamptz NOT NULL,
    ended_at    timestamptz,
    received_at timestamptz NOT NULL DEFAULT now(),
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
-- Re-reading a meter's event records must not duplicate them.
CREATE UNIQUE INDEX events_meter_record_key ON events (meter_id, kind, occurred_at) WHERE category = 'meter';
CREATE INDEX events_meter_time_idx ON events (meter_id, occurred_at);
CREATE INDEX events_time_idx ON events (occurred_at);

-- Per-cycle read success (采集成功率) per channel; the overall rate is the view below.
CREATE TABLE read_cycles (
    channel_id  integer NOT NULL REFERENCES channels(id),
    cycle_at    timestamptz NOT NULL,                  -- the interval the cycle reads
    due         integer NOT NULL CHECK (due >= 0),
    succeeded   integer NOT NULL CHECK (succeeded >= 0 AND succeeded <= due),
    readings    integer NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    utilisation real,                                  -- busy time / interval length (1.3 = 130%)
    PRIMARY KEY (cycle_at, channel_id)
);

CREATE VIEW read_success_rate AS
SELECT cycle_at,
       sum(due)::integer AS due,
       sum(succeeded)::integer AS succeeded,
       CASE WHEN sum(due) = 0 THEN NULL ELSE sum(succeeded)::numeric / sum(due) END AS success_rate
FROM read_cycles
GROUP BY cycle_at;

-- Append-only audit trail: who did what, why, when, with which evidence.
CREATE TABLE audit_log (
    id        bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,
    entity    text,
    entity_id text,
    reason    text,
    details   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_entity_idx ON audit_log (entity, entity_id);

CREATE FUNCTION audit_log_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_log_no_update_delete BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_reject_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_reject_change();
