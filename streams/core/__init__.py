"""The contract and pure building blocks every other package uses: settings, topic names, the
wire codec, areas, segments, window maths, the rotation schedule, the Redis key layout and the
metric names. Imports only the standard library, numpy and prometheus-client: never faust,
aiohttp or redis, so it is tested in microseconds and the producers can share it.
"""
