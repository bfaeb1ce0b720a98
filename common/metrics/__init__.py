"""Evaluation metrics of CONTRACT.md's METRICS, computed on typed frames over the schema's modeled
columns. No Flower imports: sites call these on data that never leaves them, and benchmarks and
tests call them directly."""
