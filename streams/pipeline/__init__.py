"""The worker's data path: ingest planning, the Redis stores (HyperLogLogs, published estimates),
the ingest service and the estimator pass, and the Kafka transport tuning. Imports core and
estimate; never ops, runtime or tools.
"""
