"""Offline commands: simulate, demo, evaluate, calibrate and bench, and the harness that runs a
real worker for them. May import every other package and the producers; nothing imports them.
"""
