"""Multi-objective fine-tuning: per-example weights, MGDA, weight conditioning."""
