-- Trustworthy money -> relay chain: validated registers (VEE holds, register restarts), meter-to-account
-- assignments with effective times, reconnect mode, refusal and relay-mismatch state (audited once per
-- change, not every pass).

-- Reconnect mode: 'close' switches the supply on; 'close_allowed' (合闸允许) lets the customer press the
-- button. NULL on an account means the [safety] reconnect_mode of the configuration.
ALTER TABLE accounts ADD COLUMN reconnect_mode text CHECK (reconnect_mode IN ('close', 'close_allowed'));
ALTER TABLE commands ADD COLUMN reconnect_mode text NOT NULL DEFAULT 'close'
    CHECK (reconnect_mode IN ('close', 'close_allowed'));

-- Which account a meter bills to, from when to when (a tenant change closes one row and opens the next).
-- A meter without rows bills to meters.account_id over all time (inventory imports, replacements).
CREATE TABLE meter_assignments (
    id             bigserial PRIMARY KEY,
    meter_id       integer NOT NULL REFERENCES meters(id),
    account_id     bigint NOT NULL REFERENCES accounts(id),
    effective_from timestamptz NOT NULL,
    effective_to   timestamptz,
    operator       text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (effective_to IS NULL OR effective_to > effective_from)
);
CREATE UNIQUE INDEX meter_assignments_one_open ON meter_assignments (meter_id) WHERE effective_to IS NULL;
CREATE INDEX meter_assignments_account_idx ON meter_assignments (account_id);

-- VEE: how far each energy register has been validated, and the last valid value.
CREATE TABLE vee_state (
    meter_id        integer NOT NULL REFERENCES meters(id),
    quantity_id     smallint NOT NULL REFERENCES quantities(id),
    validated_until timestamptz NOT NULL,
    last_ts         timestamptz NOT NULL,
    last_value      double precision NOT NULL,
    PRIMARY KEY (meter_id, quantity_id)
);

-- Unresolved suspect data holds billing and automatic disconnection of the meter's account.
CREATE TABLE vee_holds (
    id                bigserial PRIMARY KEY,
    meter_id          integer NOT NULL REFERENCES meters(id),
    quantity_id       smallint NOT NULL REFERENCES quantities(id),
    rule              text NOT NULL CHECK (rule IN ('decrease', 'jump', 'identity')),
    reason            text NOT NULL,
    first_ts          timestamptz NOT NULL,      -- the first suspect reading
    previous_value    double precision,
    value             double precision,
    opened_at         timestamptz NOT NULL DEFAULT now(),
    resolved_at       timestamptz,
    resolution        text CHECK (resolution IN ('accepted', 'replaced', 'corrected')),
    resolved_by       text,
    resolution_reason text,
    CHECK ((resolved_at IS NULL) = (resolution IS NULL))
);
CREATE UNIQUE INDEX vee_holds_one_open ON vee_holds (meter_id, quantity_id) WHERE resolved_at IS NULL;

-- A register that restarted in place (a meter swapped without a new inventory row): billing splits at
-- ``at``: the old device up to final_value, the new one from initial_value.
CREATE TABLE register_restarts (
    id            bigserial PRIMARY KEY,
    meter_id      integer NOT NULL REFERENCES meters(id),
    quantity_id   smallint NOT NULL REFERENCES quantities(id),
    at            timestamptz NOT NULL,
    final_value   double precision NOT NULL,
    initial_value double precision NOT NULL,
    hold_id       bigint REFERENCES vee_holds(id),
    operator      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (meter_id, quantity_id, at)
);

-- The refusal currently in force per meter (audited when it starts or changes, not on every pass).
CREATE TABLE fee_control_refusals (
    meter_id integer PRIMARY KEY REFERENCES meters(id),
    action   text NOT NULL,
    rule     text NOT NULL,
    since    timestamptz NOT NULL
);

-- A relay found in another state than the command log says (alarm raised once per mismatch).
CREATE TABLE relay_mismatches (
    meter_id      integer PRIMARY KEY REFERENCES meters(id),
    expected_open boolean NOT NULL,
    observed_open boolean NOT NULL,
    observed_at   timestamptz NOT NULL,
    since         timestamptz NOT NULL DEFAULT now()
);

GRANT SELECT, INSERT, UPDATE ON meter_assignments, vee_state, vee_holds, register_restarts TO headend_billing;
GRANT SELECT, INSERT, UPDATE, DELETE ON vee_state, vee_holds, fee_control_refusals, relay_mismatches
    TO headend_daemon, headend_billing;
-- suspect marks and corrections (readings is a hypertable in TimescaleDB mode: table-level grant)
GRANT UPDATE ON readings TO headend_daemon, headend_billing;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO headend_daemon, headend_billing;

-- Tariffs: tiered monthly blocks (阶梯电价) and time-of-use by time of day and season priced by the
-- head-end from interval readings; ``definition`` holds the blocks or slots (see headend.billing.tariff).
ALTER TABLE tariffs DROP CONSTRAINT tariffs_kind_check;
ALTER TABLE tariffs ADD CONSTRAINT tariffs_kind_check CHECK (kind IN ('flat', 'tou', 'tiered'));
ALTER TABLE tariffs ADD COLUMN definition jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Meter identity (DL/T 645 meter number 04 00 04 02), checked daily: a different answer means another
-- device answers at this address (replaced); ``observed`` holds it until an operator resolves the hold.
CREATE TABLE meter_identities (
    meter_id   integer PRIMARY KEY REFERENCES meters(id),
    identity   text NOT NULL,
    observed   text,
    checked_at timestamptz NOT NULL
);
GRANT SELECT, INSERT, UPDATE ON meter_identities TO headend_daemon, headend_billing;
