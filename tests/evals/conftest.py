import sys
from pathlib import Path

# The real-data tests' helpers (subprocess entry points with downloads off, test documents).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
