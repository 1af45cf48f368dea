"""The package version, in one place (imported by ``pyro_nf`` and its provenance attrs)."""

__version__ = "0.1.0"
