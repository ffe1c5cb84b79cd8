"""The commands around single algorithms: `mixprune bench` (latency of every form of a model) and `mixprune
sensitivity` (per-group drops on a validation split)."""
