-- Privileges of the group roles created in 0001. Later migrations grant on their own tables.

GRANT USAGE ON SCHEMA public TO headend_daemon, headend_billing, headend_reporting;

-- Reporting reads everything, now and in tables added later by the migrating role.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO headend_reporting;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO headend_reporting;

-- The daemon: inventory (managed by `headend inventory`), readings, events, statistics, commands.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO headend_daemon;
GRANT INSERT, UPDATE, DELETE ON channels, meters TO headend_daemon;
GRANT INSERT ON readings, events, read_cycles, quantities, reading_sources, audit_log TO headend_daemon;
GRANT UPDATE ON events, read_cycles, commands, headend_settings TO headend_daemon;
GRANT INSERT ON commands TO headend_daemon;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO headend_daemon;

-- Billing: accounts, tariffs, money, and creating/cancelling relay commands; reads readings.
GRANT SELECT ON ALL TABLES IN SCHEMA public TO headend_billing;
GRANT INSERT, UPDATE ON accounts, tariffs, tariff_prices, payments, ledger, balances, bills TO headend_billing;
GRANT INSERT, UPDATE ON commands TO headend_billing;
GRANT UPDATE (account_id, protected, protected_reason) ON meters TO headend_billing;
GRANT INSERT ON audit_log TO headend_billing;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO headend_billing;

-- Nobody but the owner may rewrite history.
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
