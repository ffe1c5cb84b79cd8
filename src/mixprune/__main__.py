"""`python -m mixprune ...` is the same as the `mixprune` command."""

import sys

from .cli import main

sys.exit(main())
