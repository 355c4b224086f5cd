"""Every Kafka topic name crowdpulse uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass

EVENTS = "crowd.events"
OCCUPANCY = "crowd.occupancy"
ALERTS = "crowd.alerts"
DEADLETTER = "crowd.deadletter"
LATE = "crowd.late"


@dataclass(frozen=True)
class TopicNames:
    """The topic names for one deployment; `prefix` isolates tests on a shared broker."""

    prefix: str = ""

    @property
    def events(self) -> str:
        return self.prefix + EVENTS

    @property
    def occupancy(self) -> str:
        return self.prefix + OCCUPANCY

    @property
    def alerts(self) -> str:
        return self.prefix + ALERTS

    @property
    def deadletter(self) -> str:
        return self.prefix + DEADLETTER

    @property
    def late(self) -> str:
        return self.prefix + LATE

    def all(self) -> list[str]:
        return [self.events, self.occupancy, self.alerts, self.deadletter, self.late]
