"""The Kafka transport of the worker's Faust app: Faust's aiokafka transport, with the consumer's
fetch long-poll bounded by a setting.

Faust creates its aiokafka consumer with `fetch_max_wait_ms=1500` and offers no setting for it.
Apache Kafka answers a fetch as soon as any data arrives, so the value only bounds idle polling;
the embedded Tansu broker instead holds a fetch for most of that time when the consumer is
caught up. Measured here with a message every 10 ms: delivery p50 0.42 s / p99 0.75 s at
1,500 ms, 0.012 s / 0.027 s at 50 ms (docs/performance.md). That delay came on top of every
estimate's latency.
"""

from __future__ import annotations

import logging
from typing import Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)


def transport_class(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    """A Faust Kafka transport whose worker consumer waits at most `fetch_max_wait_ms` per fetch."""

    class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            # Read by the fetcher that start() creates; there is no public way to set it.
            if hasattr(consumer, "_fetch_max_wait_ms"):
                consumer._fetch_max_wait_ms = fetch_max_wait_ms
            else:
                log.warning("this aiokafka has no _fetch_max_wait_ms: fetches wait up to Faust's 1,500 ms")
            return consumer

    class Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport
