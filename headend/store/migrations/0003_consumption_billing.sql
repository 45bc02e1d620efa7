-- Daily consumption (both storage modes), billing ledger, payments, balances and bills.

-- Consumption of energy registers per UTC day: last value of the day minus the last value of the
-- previous day with data (previous_day says which; register rollover/replacement is billing's job).
CREATE VIEW daily_consumption AS
SELECT d.meter_id, d.quantity_id, q.name AS quantity, d.day,
       lag(d.day) OVER w AS previous_day,
       d.first_value, d.last_value,
       d.last_value - lag(d.last_value) OVER w AS consumption
FROM readings_daily d
JOIN quantities q ON q.id = d.quantity_id
WHERE q.name LIKE 'energy\_%'
WINDOW w AS (PARTITION BY d.meter_id, d.quantity_id ORDER BY d.day);

CREATE TABLE payments (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL REFERENCES accounts(id),
    amount      numeric(14, 2) NOT NULL CHECK (amount <> 0),
    reference   text NOT NULL UNIQUE,                 -- a payment is recorded once per reference
    source      text NOT NULL DEFAULT 'cli',          -- cli, import:<file>, api ...
    operator    text,
    paid_at     timestamptz NOT NULL DEFAULT now(),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_account_idx ON payments (account_id, paid_at);

-- Every change of a balance: charges (consumption billed), payments, adjustments.
CREATE TABLE ledger (
    id              bigserial PRIMARY KEY,
    account_id      bigint NOT NULL REFERENCES accounts(id),
    kind            text NOT NULL CHECK (kind IN ('charge', 'payment', 'adjustment')),
    amount          numeric(14, 2) NOT NULL,          -- signed: charges negative, payments positive
    period_start    timestamptz,
    period_end      timestamptz,
    idempotency_key text NOT NULL UNIQUE,             -- e.g. charge:<account>:<period>, payment:<reference>
    details         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_account_idx ON ledger (account_id, created_at);

CREATE TABLE balances (
    account_id        bigint PRIMARY KEY REFERENCES accounts(id),
    balance           numeric(14, 2) NOT NULL DEFAULT 0,
    billed_until      timestamptz,                    -- consumption up to here is in the balance
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Postpaid bills.
CREATE TABLE bills (
    id           bigserial PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES accounts(id),
    period_start timestamptz NOT NULL,
    period_end   timestamptz NOT NULL CHECK (period_end > period_start),
    consumption  numeric(14, 3) NOT NULL,
    amount       numeric(14, 2) NOT NULL,
    due_at       timestamptz NOT NULL,
    paid_at      timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (account_id, period_start)
);
