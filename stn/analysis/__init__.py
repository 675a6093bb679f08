"""Analysis of trained models: evaluation (metrics, results.json) and pose alignment."""
