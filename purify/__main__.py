"""`python -m purify ...` is the `purify` command."""

import sys

from .cli import main

sys.exit(main())
