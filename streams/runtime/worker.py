"""`crowdpulse worker`: one stream worker (Faust); run several for scale-out."""

from __future__ import annotations

import argparse
import os

HELP = "one stream worker (Faust); run several for scale-out"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--http-port", type=int, help="HTTP port (env CROWDPULSE_HTTP_PORT, default 6066)")
    p.add_argument("--loglevel", default="warning", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    from faust.worker import Worker

    from streams.core.settings import Settings
    from streams.core.topics import TopicNames
    from streams.runtime.app import create_app
    from streams.runtime.preflight import check_kafka, check_port_free, check_redis, redacted
    from streams.runtime.services import EmbeddedServices, ensure_topics, topic_partitions

    settings = Settings.from_env(http_port=args.http_port)
    check_port_free(settings.http_host, settings.http_port)
    services = EmbeddedServices(os.environ)
    try:
        endpoints = services.start()
        if services.processes:
            print("\n".join(endpoints.env_lines()), flush=True)
        check_kafka(endpoints.kafka)
        check_redis(endpoints.redis_url)
        settings = settings.with_endpoints(endpoints.kafka, endpoints.redis_url)
        ensure_topics(endpoints.kafka, topic_partitions(settings), security=settings.kafka_security.kafka_python_config())
        app = create_app(settings)
        ready = (f"crowdpulse worker ready: consuming {TopicNames(settings.topic_prefix).events} from {endpoints.kafka}, "
                 f"Redis {redacted(endpoints.redis_url)}, API http://{settings.http_host}:{settings.http_port}/")

        class ReadyWorker(Worker):
            async def on_startup_finished(self) -> None:
                await super().on_startup_finished()
                print(ready, flush=True)  # with --loglevel warning the only line that says it runs

        worker = ReadyWorker(app, loglevel=args.loglevel, quiet=True)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            return int(exc.code or 0)
        return 0
    finally:
        services.stop()
