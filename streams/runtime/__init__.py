"""A crowdpulse process: the Faust app that composes the pipeline and the operations room
(`crowdpulse worker`), and the embedded broker and Redis (`crowdpulse services`). Imports
core, estimate, pipeline and ops; never tools.
"""
