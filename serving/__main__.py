"""`python -m serving serve ...` and `python -m serving bench serve ...` (what `python -m engine` will register)."""

import sys

from serving.cli import main

sys.exit(main())
