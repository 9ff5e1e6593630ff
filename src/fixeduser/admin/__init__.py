"""Helpers behind the admin commands (explain, whois, status, policy import/export)."""
