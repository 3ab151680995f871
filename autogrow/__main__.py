"""``python -m autogrow`` (and ``torchrun -m autogrow``) runs the command line."""

import sys

from autogrow.cli import main

sys.exit(main())
