"""The types every layer shares, below all of them: results (`Scores`, `ClassMaps`).

Nothing here imports from the rest of defectmine except `errors`, so any module may import it.
"""

from defectmine.core.results import ClassMaps, Scores

__all__ = ["ClassMaps", "Scores"]
