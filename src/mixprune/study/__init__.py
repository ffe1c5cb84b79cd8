"""The study: the variant table, planning and running its chains over seeds (locally or on Ray), measuring
each model, the typed Results, and the cache of trained models. See run.py."""
