"""pyro_nf: normalizing-flow posteriors for Pyro, with ArviZ diagnostics.

Swap ``AutoNormal`` for :class:`AutoIAF`, :class:`AutoMAF` or :class:`AutoPlanar`, fit with SVI (or
:func:`fit`), and check with :func:`diagnose` / :func:`to_inference_data` whether the flow found what
mean-field missed.
"""

__version__ = "0.1.0"
