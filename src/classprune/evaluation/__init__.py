"""Scoring trained networks: val and test metrics, operating points, dead-network diagnosis."""
