"""Local stack: embedded infrastructure and the process runner behind `make up`."""
