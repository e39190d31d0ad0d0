"""HTTP entrypoints of the tracker: they translate requests, the modules above decide."""
