"""The error a user can fix: bad configuration, arguments or input files.

`crowdpulse` prints a ConfigError as one line and exits 2; every other exception keeps its
traceback, because it is a bug. It subclasses ValueError so callers that validate values can
still catch both.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad configuration, command-line arguments or an unreadable input file."""


class ServiceUnavailable(ConfigError):
    """A configured service cannot be reached or used (Kafka or Redis not answering, an HTTP
    port taken): printed as one line naming the setting to check, like a ConfigError."""
