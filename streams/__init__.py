"""crowdpulse's stream side: network events in, crowd estimates out.

Packages, lowest first; each imports only from the ones before it (tests/unit/test_layout.py):
- core/      the contract and pure building blocks: settings, topics, wire codec, areas, keys
- estimate/  counts to people: the estimator, visibility model, privacy rules
- pipeline/  the worker's data path: ingest, HyperLogLog store, the estimator pass
- ops/       the operations room: HTTP API, SSE, auth, alerts, webhook, dashboard
- runtime/   a worker process: the Faust app composing pipeline and ops, embedded services
- tools/     offline commands: simulate, demo, evaluate, calibrate, bench
`cli.py` is the entry point. Full map: docs/architecture.md.
"""
