"""What the operations room sees: the HTTP API over a narrow read interface, server-sent
events, access tokens, alert rules and their store, the webhook and the static dashboard.
Imports core and estimate; never pipeline, runtime or tools.
"""
