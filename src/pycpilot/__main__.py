"""`python -m pycpilot` works like the `pycpilot` command."""

import sys

from pycpilot.cli import main

sys.exit(main())
