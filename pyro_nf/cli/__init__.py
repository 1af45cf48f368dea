"""The ``pyro-nf`` command: ``list``, ``fit`` and ``compare`` on built-in or user models."""

from pyro_nf.cli.command import main

__all__ = ["main"]
