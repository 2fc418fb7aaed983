"""looper: post-train language models for grade-school math with Regime W."""

__version__ = "0.1.0"
