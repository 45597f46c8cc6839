"""probcons: exact physics constraints on calibrated probabilistic predictions of PDE solutions."""

__version__ = "0.1.0"
