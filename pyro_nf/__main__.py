"""``python -m pyro_nf``: the ``pyro-nf`` command (see :mod:`pyro_nf.cli`)."""

import sys

from pyro_nf.cli.command import main

if __name__ == "__main__":
    sys.exit(main())
