"""Suite-wide fixtures. Area fixtures live in tests/support/ and are imported here."""
