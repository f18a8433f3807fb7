"""`python -m flywheel.cli ...` (the Batch job's command and the local stack's processes)."""

import sys

from flywheel.cli.main import main

sys.exit(main())
