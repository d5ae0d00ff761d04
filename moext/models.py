"""The old import path of :mod:`moext.nn.moext`, kept so that older checkpoints still load.

Checkpoints written before the package was layered pickle ``moext.models.MoExtConfig`` in
their hyper-parameters. New code imports from :mod:`moext.nn.moext`.
"""

from moext.nn.moext import MoExtConfig

__all__ = ["MoExtConfig"]
