"""The old import path of :mod:`moext.nn.moext`, kept so that checkpoints written before the
package was layered (they pickle ``moext.models.MoExtConfig`` in their hyper-parameters) still
load. New code imports from :mod:`moext.nn.moext`."""

from moext.nn.moext import MoExtConfig

__all__ = ["MoExtConfig"]
