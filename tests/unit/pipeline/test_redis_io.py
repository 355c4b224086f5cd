"""How a Redis Cluster is named (its URL form) and how a batch's adds are split between its
nodes. Pure: the cluster itself is exercised in tests/integration (any_redis, test_cluster)."""

from __future__ import annotations

import numpy as np
import pytest

from streams.pipeline.ingest import HllAdds
from streams.pipeline.redis_io import cluster_seeds, is_cluster_url
from streams.runtime.preflight import redacted


def test_a_cluster_url_names_its_seeds_and_keeps_credentials_and_tls_options() -> None:
    assert cluster_seeds("redis://127.0.0.1:6379/0") is None
    assert cluster_seeds("redis+cluster://10.0.0.1:7000,10.0.0.2:7001") == (
        "redis://10.0.0.1:7000", [("10.0.0.1", 7000), ("10.0.0.2", 7001)])
    plain, seeds = cluster_seeds("rediss+cluster://app:s3cret@r1:7000,r2:7000/0?ssl_ca_certs=/ca.pem")  # type: ignore[misc]
    assert plain == "rediss://app:s3cret@r1:7000?ssl_ca_certs=/ca.pem"
    assert seeds == [("r1", 7000), ("r2", 7000)]
    assert is_cluster_url("redis+cluster://r1:7000") and not is_cluster_url("rediss://r1:6380/0")


@pytest.mark.parametrize("url", ["redis+cluster://r1", "redis+cluster://r1:7000,:7001", "redis+cluster://r1:7000/2"])
def test_a_malformed_cluster_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        cluster_seeds(url)


def test_a_cluster_url_is_redacted_like_any_other() -> None:
    assert redacted("redis+cluster://app:s3cret@r1:7000,r2:7000") == "redis+cluster://app:***@r1:7000,r2:7000"
    assert redacted("redis+cluster://r1:7000,r2:7000") == "redis+cluster://r1:7000,r2:7000"


def test_a_nodes_share_of_the_adds_keeps_each_keys_members_and_expiry() -> None:
    members = np.arange(10, dtype=np.uint64)
    adds = HllAdds(["k0", "k1", "k2", "k3"], [100, 101, 102, 103], np.array([0, 3, 3, 7, 10], dtype=np.int64), members)
    share = adds.take([3, 0, 1])
    assert share.keys == ["k3", "k0", "k1"] and share.expire_at_ms == [103, 100, 101]
    assert share.starts.tolist() == [0, 3, 6, 6]
    assert share.members.tolist() == [7, 8, 9, 0, 1, 2]
    assert adds.take([0, 1, 2, 3]) is adds
    assert len(adds.take([])) == 0 and adds.take([]).starts.tolist() == [0]
