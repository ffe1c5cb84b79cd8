"""Many studies at once: one cell runner (cells), grids of configs (sweep) and the lightweight design search."""
