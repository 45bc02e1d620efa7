"""Billing: consumption from register differences, tariff pricing, balances and bills."""
