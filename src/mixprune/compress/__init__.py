"""Compression of a network's weights: magnitude and N:M masks (pruning), channel groups and physical removal
(structured, slimming), and per-group sensitivity on a validation split (sensitivity)."""
