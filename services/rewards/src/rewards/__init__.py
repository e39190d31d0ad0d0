"""rewards service."""
