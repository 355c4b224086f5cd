"""Times as users write them on the command line: ISO 8601 instants and HH:MM times of day."""

from __future__ import annotations

from datetime import datetime, timezone

from streams.core.errors import ConfigError


def parse_time(text: str) -> int:
    """ISO 8601 (UTC if no offset is given) to epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--start {text!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1000)


def clock_seconds(text: str) -> int:
    """"HH:MM" (a UTC time of day) to seconds after midnight."""
    hours, sep, minutes = text.partition(":")
    if not (sep and hours.isdigit() and minutes.isdigit() and int(hours) < 24 and int(minutes) < 60):
        raise ConfigError(f"{text!r} is not a time of day HH:MM")
    return int(hours) * 3600 + int(minutes) * 60
