-- Meter replacements: the old meter's final and the new meter's initial register readings, so
-- consumption across the swap is (final - start) on the old meter plus (end - initial) on the new one.
CREATE TABLE meter_replacements (
    id            bigserial PRIMARY KEY,
    old_meter_id  integer NOT NULL UNIQUE REFERENCES meters(id),  -- a meter is removed once
    new_meter_id  integer NOT NULL UNIQUE REFERENCES meters(id),
    replaced_at   timestamptz NOT NULL,
    final_kwh     jsonb NOT NULL,    -- {quantity: value} read off the old meter when it came out
    initial_kwh   jsonb NOT NULL,    -- {quantity: value} on the new meter when it went in
    operator      text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (old_meter_id <> new_meter_id)
);

GRANT INSERT ON meter_replacements TO headend_billing;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO headend_billing;
GRANT UPDATE (enabled) ON meters TO headend_billing;
