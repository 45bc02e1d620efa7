-- Billing (0007: VEE holds, register restarts, meter assignments, tariffs) under the operators' rules
-- (0008): the daemon login can run the billing and fee-control services, and no login forges what
-- billing rests on. Applied after both, whatever order 0007 and 0008 ran in.
--
-- * readings: only the VEE path changes a stored reading: its quality by the daemon's billing pass
--   (suspect) or an authenticated admin resolving a hold, its value only as an admin's `estimated`
--   correction; which reading it is never changes. A move-out reading comes in through
--   headend_add_manual_reading (admin).
-- * vee_holds are opened by the daemon (or the owner) and resolved once, by the authenticated admin
--   named in resolved_by; what was found is fixed when the hold opens.
-- * meter_assignments, register_restarts: written by an authenticated admin under their own id.
-- * tariffs and accounts: an authenticated admin (the daemon keeps its arrears columns).
-- * The ledger rules of 0008 cover billing's entries unchanged: bills and prepaid periods are `charge`
--   rows (daemon, or a cashier), refunds and corrections `adjustment` rows (cashier).

-- The daemon's billing service reads assignments and restarts and settles postpaid bills it issues.
GRANT SELECT ON meter_assignments, register_restarts TO headend_daemon;
GRANT UPDATE (paid_at) ON bills TO headend_daemon;
-- A tenant change moves the meter's current account (0005 granted the account column only).
GRANT UPDATE (updated_at) ON meters TO headend_billing;
-- Holds, assignments and restarts are history: resolved or ended, never removed or rewritten.
REVOKE DELETE, TRUNCATE ON vee_holds, meter_assignments, register_restarts
    FROM PUBLIC, headend_daemon, headend_billing;
REVOKE UPDATE ON register_restarts FROM PUBLIC, headend_daemon, headend_billing;

CREATE FUNCTION readings_update_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF headend_is_owner() THEN
        RETURN NEW;
    END IF;
    IF (NEW.meter_id, NEW.quantity_id, NEW.ts, NEW.source_id, NEW.received_at)
       IS DISTINCT FROM (OLD.meter_id, OLD.quantity_id, OLD.ts, OLD.source_id, OLD.received_at) THEN
        RAISE EXCEPTION 'reading of meter % at %: which reading it is never changes', OLD.meter_id, OLD.ts
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.value IS DISTINCT FROM OLD.value THEN
        PERFORM headend_require_role('admin', format('correcting the reading of meter %s at %s', OLD.meter_id, OLD.ts));
        IF NEW.quality <> 'estimated' THEN
            RAISE EXCEPTION 'reading of meter % at %: a corrected value is estimated', OLD.meter_id, OLD.ts
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    ELSIF NOT headend_is_daemon() THEN
        PERFORM headend_require_role('admin', format('changing the quality of a reading of meter %s', OLD.meter_id));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER readings_update_guard BEFORE UPDATE ON readings
    FOR EACH ROW EXECUTE FUNCTION readings_update_guard();

-- A register read on site (a tenant's move-out reading), stored like a polled one by an admin.
CREATE FUNCTION headend_add_manual_reading(p_meter integer, p_ts timestamptz, p_value double precision,
                                           p_source text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    PERFORM headend_require_role('admin', format('a manual reading of meter %s', p_meter));
    INSERT INTO reading_sources (name) VALUES (p_source) ON CONFLICT DO NOTHING;
    INSERT INTO quantities (name) VALUES ('energy_import_kwh') ON CONFLICT DO NOTHING;
    INSERT INTO readings (meter_id, quantity_id, ts, value, source_id)
    SELECT p_meter, q.id, p_ts, p_value, s.id FROM quantities q, reading_sources s
    WHERE q.name = 'energy_import_kwh' AND s.name = p_source
    ON CONFLICT (meter_id, quantity_id, ts) DO NOTHING;
END $$;
REVOKE EXECUTE ON FUNCTION headend_add_manual_reading(integer, timestamptz, double precision, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION headend_add_manual_reading(integer, timestamptz, double precision, text)
    TO headend_billing;

CREATE FUNCTION vee_holds_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF headend_is_owner() THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        IF NEW.resolved_at IS NOT NULL THEN
            RAISE EXCEPTION 'a hold is opened unresolved' USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    IF (NEW.meter_id, NEW.quantity_id, NEW.rule, NEW.reason, NEW.first_ts, NEW.previous_value, NEW.value,
        NEW.opened_at)
       IS DISTINCT FROM (OLD.meter_id, OLD.quantity_id, OLD.rule, OLD.reason, OLD.first_ts, OLD.previous_value,
                         OLD.value, OLD.opened_at)
       OR OLD.resolved_at IS NOT NULL THEN
        RAISE EXCEPTION 'hold %: what was found is fixed when it opens, and it is resolved once', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.resolved_at IS NOT NULL THEN
        PERFORM headend_require_role('admin', format('resolving hold %s', OLD.id));
        IF NEW.resolved_by IS DISTINCT FROM headend_current_operator() THEN
            RAISE EXCEPTION 'hold %: % is not the operator authenticated on this connection', OLD.id, NEW.resolved_by
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER vee_holds_guard BEFORE INSERT OR UPDATE ON vee_holds
    FOR EACH ROW EXECUTE FUNCTION vee_holds_guard();

-- Assignments and restarts: an admin under their own id; an assignment only ever gets its end.
CREATE FUNCTION billing_records_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF headend_is_owner() THEN
        RETURN NEW;
    END IF;
    PERFORM headend_require_role('admin', format('writing %s', TG_TABLE_NAME));
    PERFORM headend_check_actor(NEW.operator);
    IF TG_OP = 'UPDATE' THEN  -- meter_assignments only (restarts are never updated)
        IF (NEW.id, NEW.meter_id, NEW.account_id, NEW.effective_from, NEW.operator, NEW.created_at)
           IS DISTINCT FROM (OLD.id, OLD.meter_id, OLD.account_id, OLD.effective_from, OLD.operator, OLD.created_at)
        THEN
            RAISE EXCEPTION 'assignment %: only its end may be set', OLD.id USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER meter_assignments_writer BEFORE INSERT OR UPDATE ON meter_assignments
    FOR EACH ROW EXECUTE FUNCTION billing_records_guard();
CREATE TRIGGER register_restarts_writer BEFORE INSERT ON register_restarts
    FOR EACH ROW EXECUTE FUNCTION billing_records_guard();

-- Tariffs and accounts: an authenticated admin. The daemon's column grants (arrears flags) stay its own.
CREATE FUNCTION admin_writes_guard() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NOT headend_is_owner() AND NOT headend_is_daemon() THEN
        PERFORM headend_require_role('admin', format('changing %s', TG_TABLE_NAME));
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;
CREATE TRIGGER tariffs_writer BEFORE INSERT OR UPDATE OR DELETE ON tariffs
    FOR EACH ROW EXECUTE FUNCTION admin_writes_guard();
CREATE TRIGGER tariff_prices_writer BEFORE INSERT OR UPDATE OR DELETE ON tariff_prices
    FOR EACH ROW EXECUTE FUNCTION admin_writes_guard();
CREATE TRIGGER accounts_writer BEFORE INSERT OR UPDATE OR DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION admin_writes_guard();

-- How a reconnect closes the relay is part of what a command is: fixed at creation like its action.
CREATE FUNCTION commands_mode_fixed() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
BEGIN
    IF NEW.reconnect_mode IS DISTINCT FROM OLD.reconnect_mode AND NOT headend_is_owner() THEN
        RAISE EXCEPTION 'command %: its reconnect mode is fixed at creation', OLD.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER commands_mode_fixed BEFORE UPDATE OF reconnect_mode ON commands
    FOR EACH ROW EXECUTE FUNCTION commands_mode_fixed();
