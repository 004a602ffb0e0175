"""Benchmarks of the pipeline against a pass-through Faust agent and a raw Kafka client (`make bench`)."""
