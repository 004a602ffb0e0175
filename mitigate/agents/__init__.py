"""Faust agents of the pipeline: the anomaly and signal streams, action results and orchestration."""
