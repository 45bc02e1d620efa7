-- Tariff revisions: a time-of-use tariff's slots or a tiered tariff's blocks in force from a time on
-- (`headend tariffs set NAME ... --from`). tariffs.definition is the first definition, in force before
-- every revision; register prices are revised in tariff_prices (one row per register and start).
CREATE TABLE tariff_revisions (
    tariff_id      integer NOT NULL REFERENCES tariffs(id) ON DELETE CASCADE,
    effective_from timestamptz NOT NULL,
    definition     jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tariff_id, effective_from)
);
GRANT SELECT ON tariff_revisions TO headend_daemon, headend_billing, headend_reporting;
GRANT INSERT ON tariff_revisions TO headend_billing;
-- A revision, once made, is history that bills were computed from.
REVOKE UPDATE, DELETE, TRUNCATE ON tariff_revisions FROM PUBLIC, headend_daemon, headend_billing;
CREATE TRIGGER tariff_revisions_writer BEFORE INSERT OR UPDATE OR DELETE ON tariff_revisions
    FOR EACH ROW EXECUTE FUNCTION admin_writes_guard();
