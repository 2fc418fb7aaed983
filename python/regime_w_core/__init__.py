# The compiled core is the whole package; this file only re-exports it.
from .regime_w_core import *  # noqa: F401,F403
from .regime_w_core import __all__, __version__  # noqa: F401
