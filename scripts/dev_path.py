"""Put the source tree on the venv's path (a .pth file), so that the editable
install's `looper` script finds looper_cli from any directory. maturin's
editable mode only adds python/ (where the compiled core lands)."""

import site
import sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
target = Path(site.getsitepackages()[0]) / "looper_dev.pth"
target.write_text(f"{root}\n")
print(f"{target} -> {root}", file=sys.stderr)
