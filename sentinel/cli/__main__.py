"""`python -m sentinel.cli`: the `sentinel` script, for a checkout run without installing and for tests
that start the command line in a child process with this interpreter."""

import sys

from sentinel.cli import main

sys.exit(main())
