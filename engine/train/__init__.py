"""Training loops: concept classifiers (classifier.py)."""
