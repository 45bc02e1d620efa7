-- Time-of-use schedule checks (issue 25, `headend params check`): per meter, the schedule its tariff
-- implies (the parameter set's JSON, `definition`) as last asked for, and what the daemon last read
-- back from the meter's active set (`active_set`, `items`: DI -> value as read; or `error`). The
-- operators' desk asks for a read (requested_at, definition); only the daemon records what it read
-- (a check is due while read_at is NULL or before requested_at).
-- Reads only: nothing here makes a frame with a password go out.
CREATE TABLE tou_checks (
    meter_id     integer PRIMARY KEY REFERENCES meters(id),
    requested_at timestamptz NOT NULL DEFAULT now(),
    definition   jsonb NOT NULL CHECK (jsonb_typeof(definition) = 'object'),
    read_at      timestamptz,
    active_set   smallint CHECK (active_set IN (1, 2)),
    items        jsonb CHECK (items IS NULL OR jsonb_typeof(items) = 'object'),
    error        text CHECK (error IS NULL OR length(error) <= 2000)
);

GRANT SELECT ON tou_checks TO headend_daemon, headend_billing, headend_reporting;
GRANT INSERT (meter_id, requested_at, definition), UPDATE (requested_at, definition)
    ON tou_checks TO headend_billing;
GRANT UPDATE (read_at, active_set, items, error) ON tou_checks TO headend_daemon;
REVOKE DELETE, TRUNCATE ON tou_checks FROM PUBLIC, headend_daemon, headend_billing;
