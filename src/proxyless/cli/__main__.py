"""`python -m proxyless.cli ...`: the same as the `proxyless` command (torchrun starts it so)."""

import sys

from proxyless.cli import main

if __name__ == "__main__":
    sys.exit(main())
