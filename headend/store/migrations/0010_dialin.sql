-- Dial-in channels (cellular DTUs): a channel can be the bus behind a device that connects to a
-- listener and registers with an identity (kind 'dtu', address = the registration id), and the
-- identities that dialled in without a channel are kept for an operator to adopt.
ALTER TABLE channels DROP CONSTRAINT channels_kind_check;
ALTER TABLE channels ADD CONSTRAINT channels_kind_check CHECK (kind IN ('serial', 'tcp', 'dtu'));
-- one device, one bus, one owner: no two channels may claim the same registration id
CREATE UNIQUE INDEX channels_dtu_identity ON channels (address) WHERE kind = 'dtu';

CREATE TABLE dialin_pending (
    identity    text NOT NULL,                     -- registration id (or login address) as received
    kind        text NOT NULL,                     -- listener kind: 'dtu' (later 'gdw1376'); the
                                                   -- adopting channel has this kind, address = identity
    listener    text NOT NULL,                     -- kind@host:port of the listener it reached
    peer        text NOT NULL,                     -- last source address:port (informative only)
    first_seen  timestamptz NOT NULL,
    last_seen   timestamptz NOT NULL,
    attempts    bigint NOT NULL CHECK (attempts > 0),
    held        boolean NOT NULL,                  -- true: kept connected ([listen] unknown = "hold")
    CHECK (last_seen >= first_seen),
    PRIMARY KEY (kind, identity)                   -- each kind of device names itself in its own namespace
);

GRANT SELECT, INSERT, UPDATE, DELETE ON dialin_pending TO headend_daemon;
GRANT SELECT ON dialin_pending TO headend_billing;
