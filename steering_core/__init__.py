"""steering_core: post-block activation steering, joint adaptation and baselines.

The torch-free layer (``steering_core.config``, ``steering_core.spec``, ``steering_core.errors``)
can be imported by the API without pulling in torch. Everything else needs the ``train`` extra.
"""

__version__ = "0.1.0"
