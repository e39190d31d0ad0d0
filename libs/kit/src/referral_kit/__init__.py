"""Plumbing shared by every service; no domain rules live here."""
