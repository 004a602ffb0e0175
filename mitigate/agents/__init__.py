"""Faust agents of the pipeline: reference-table feeds and the anomaly stream."""
