# The compiled module; its typed face is the package stub.
from regime_w_core import *
from regime_w_core import __all__ as __all__, __version__ as __version__
