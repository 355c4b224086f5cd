"""docker-compose.yml, checked without a Docker engine (none on these machines): what `docker
compose config` would refuse (unknown services or volumes referenced), and what it would not
but a deployment needs: every long-running service has a healthcheck, each service's data lives
on its volume, and the workers' environment uses only settings crowdpulse reads."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from streams.core.settings import Settings

REPO = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
#: One-shot or demo-only services: no healthcheck expected.
ONE_SHOT = {"simulator", "redis-cluster-init"}
#: The cluster profile's masters and the URL its header gives for CROWDPULSE_REDIS.
CLUSTER_NODES = ("redis-c1", "redis-c2", "redis-c3")
CLUSTER_URL = "redis+cluster://redis-c1:6379,redis-c2:6379,redis-c3:6379"


def with_defaults(value: str) -> str:
    """A compose value with each ${NAME:-default} replaced by its default (what an unset NAME gives)."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def test_references_resolve() -> None:
    volumes = set(COMPOSE.get("volumes", {}))
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source in volumes or source.startswith((".", "/")), f"{name} mounts undeclared volume {source}"
        if "build" in service:
            assert (REPO / service["build"] / "Dockerfile").is_file()


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in SERVICES.items():
        if name not in ONE_SHOT:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"


def test_each_service_keeps_its_data_on_its_volume() -> None:
    kafka = SERVICES["kafka"]
    log_dirs = kafka["environment"]["KAFKA_LOG_DIRS"]
    assert any(m.endswith(f":{log_dirs}") for m in kafka["volumes"]), "Kafka's log directory is not the mounted volume"
    redis = SERVICES["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(m.endswith(":/data") for m in redis["volumes"])  # the redis image's working directory
    # The postgres image's PGDATA; the workers write the footfall history there.
    assert any(m.startswith("postgres-data:") and m.endswith(":/var/lib/postgresql/data") for m in SERVICES["postgres"]["volumes"])
    history = SERVICES["worker-1"]["environment"]["CROWDPULSE_HISTORY_DB"]
    assert history.startswith("postgresql://crowdpulse:") and history.endswith("@postgres:5432/crowdpulse")


def test_workers_use_only_settings_crowdpulse_reads() -> None:
    source = (REPO / "streams" / "core" / "settings.py").read_text() + (REPO / "streams" / "core" / "kafka_security.py").read_text()
    known = set(re.findall(r"CROWDPULSE_[A-Z0-9_]+", source))
    workers = {n: s for n, s in SERVICES.items() if "worker" in s.get("command", [])}
    assert len(workers) >= 2
    for name, service in workers.items():
        env = {k: with_defaults(str(v)) for k, v in service["environment"].items()}
        unknown = {k for k in env if k.startswith("CROWDPULSE_")} - known
        assert not unknown, f"{name}: settings crowdpulse does not read: {unknown}"
        env["CROWDPULSE_API_TOKENS"] = "reader:" + "a" * 32  # compose requires it from the caller
        Settings.from_env(env)  # the values parse


def test_prometheus_scrapes_every_worker_with_the_shipped_rules(tmp_path: Path) -> None:
    prometheus = SERVICES["prometheus"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in prometheus["volumes"]}
    config_dir = REPO / mounts["/etc/prometheus"]
    config_name = next(a for a in " ".join(prometheus["entrypoint"]).split() if a.startswith("--config.file=")).split("/")[-1]
    config = yaml.safe_load((config_dir / config_name).read_text())
    workers = sorted(n for n, s in SERVICES.items() if "worker" in s.get("command", []))
    [job] = config["scrape_configs"]
    targets = sorted(t for c in job["static_configs"] for t in c["targets"])
    assert targets == [f"{w}:{SERVICES[w]['environment']['CROWDPULSE_HTTP_PORT']}" for w in workers]
    assert all((config_dir / rules).is_file() for rules in config["rule_files"])
    # The token file the entrypoint writes is the one the scrape reads, on the data volume.
    token_file = job["authorization"]["credentials_file"]
    assert token_file in " ".join(prometheus["entrypoint"]) and token_file.startswith("/prometheus/")
    promtool = shutil.which("promtool")
    if promtool is None:
        return  # test_deploy.py fails in CI without promtool; the structure above was checked
    (tmp_path / "token").write_text("t")
    checked = tmp_path / config_name
    checked.write_text((config_dir / config_name).read_text().replace(token_file, str(tmp_path / "token")))
    for rules in config["rule_files"]:
        shutil.copy(config_dir / rules, tmp_path / rules)
    result = subprocess.run([promtool, "check", "config", str(checked)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    grafana = SERVICES["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    provisioning = REPO / mounts["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http://prometheus:")
    [provider] = yaml.safe_load((provisioning / "dashboards" / "crowdpulse.yml").read_text())["providers"]
    dashboards = REPO / mounts[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "crowdpulse-dashboard.json").read_text())
    # Provisioned (not imported), "${DS_PROMETHEUS}" resolves through a data-source variable.
    assert any(v["name"] == "DS_PROMETHEUS" and v["type"] == "datasource" for v in dashboard["templating"]["list"])


def test_the_cluster_profile_is_three_persistent_masters_the_workers_can_name() -> None:
    from streams.pipeline.redis_io import cluster_seeds

    header = (REPO / "docker-compose.yml").read_text()
    assert f"CROWDPULSE_REDIS={CLUSTER_URL}" in header
    seeds = cluster_seeds(CLUSTER_URL)
    assert seeds is not None and [host for host, _ in seeds[1]] == list(CLUSTER_NODES)
    for name in CLUSTER_NODES:
        node = SERVICES[name]
        command = node["command"]
        assert node["profiles"] == ["cluster"]
        assert command[command.index("--cluster-enabled") + 1] == "yes"
        assert command[command.index("--appendonly") + 1] == "yes"
        assert command[command.index("--cluster-announce-hostname") + 1] == name  # clients reach it by name
        assert any(m == f"{name}-data:/data" for m in node["volumes"])  # nodes.conf and AOF survive re-creation
    init = SERVICES["redis-cluster-init"]
    script = init["entrypoint"][-1]
    assert all(f"getent hosts {name}" in script for name in CLUSTER_NODES) and "--cluster-replicas 0" in script
    assert set(init["depends_on"]) == set(CLUSTER_NODES)
    # The workers take the cluster URL from the caller, one Redis by default.
    env = SERVICES["worker-1"]["environment"]["CROWDPULSE_REDIS"]
    assert env.startswith("${CROWDPULSE_REDIS:-") and with_defaults(env) == "redis://redis:6379/0"
