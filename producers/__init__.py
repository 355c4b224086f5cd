"""The producer edge: the network-event simulator, keyed pseudonyms and the frame publisher.

May import `streams.core` (the contract) only; nothing here runs in the worker.
"""
