"""attribution service."""
