"""The ground floor: typed configuration, errors, output paths, atomic files, the machine, named random streams.
Nothing here imports another mixprune package."""
