"""classprune: class-dependent lottery-ticket pruning (Entezari & Saukh) for imbalanced binary vision data."""

__version__ = "0.1.0"
