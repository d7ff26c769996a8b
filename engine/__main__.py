"""`python -m engine ...`: the command line lives above the library (cli/); this shim is the one place
engine/ reaches it, so the command users know keeps working."""

import sys

from cli.main import main

sys.exit(main())
