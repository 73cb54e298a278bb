"""defectmine: visual inspection when defects are rare."""

__version__ = "0.1.0"
