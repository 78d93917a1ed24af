"""Side-by-side benchmarks against their anchors; ``python -m bench`` runs them all."""
