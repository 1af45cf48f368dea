"""``python -m pyro_nf.cli``: the ``pyro-nf`` command."""

import sys

from pyro_nf.cli.command import main

if __name__ == "__main__":
    sys.exit(main())
