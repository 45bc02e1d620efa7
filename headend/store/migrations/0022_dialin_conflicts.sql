-- A second connection claiming a device that is already connected (a conflict: an impostor, or the
-- device itself redialling while its old connection lingers) is listed with the pending identities
-- so that `headend channels pending` shows it; such a row names a known device and stays listed.
ALTER TABLE dialin_pending ADD COLUMN conflicts bigint NOT NULL DEFAULT 0 CHECK (conflicts >= 0);
