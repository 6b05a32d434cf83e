"""Every partitioning puts each user in exactly one client; the random ones repeat for a seed."""

from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny, write_csv

from shared.config import PartitionConfig
from shared.data.dataset import build_dataset
from shared.data.partition import dominant_genre, partition_users
from shared.data.readers import read_directory
from shared.config import DataConfig
from shared.errors import FedrecError

CASES = [("user", 0), ("region", 0), ("occupation", 0), ("iid", 4), ("dirichlet", 3)]


@pytest.fixture
def dataset(tmp_path: Path):
    d = write_csv(make_tiny(num_users=40, num_items=60, seed=3), tmp_path / "d")
    return build_dataset(read_directory(d), DataConfig(dataset="csv", data_path=str(d)))


@pytest.mark.parametrize("scheme,k", CASES)
def test_every_user_is_in_exactly_one_partition(dataset, scheme: str, k: int) -> None:
    part = partition_users(dataset, PartitionConfig(partitioning=scheme, num_partitions=k))
    members = np.concatenate([part.users(p) for p in range(part.num_partitions)])
    assert sorted(members.tolist()) == list(range(dataset.num_users))
    stats = part.stats(dataset)
    assert sum(p["users"] for p in stats["partitions"]) == dataset.num_users
    assert sum(p["interactions"] for p in stats["partitions"]) == dataset.num_interactions


@pytest.mark.parametrize("scheme,k", [("iid", 4), ("dirichlet", 3)])  # the ones that draw at random
def test_partitioning_is_deterministic_for_a_seed(dataset, scheme: str, k: int) -> None:
    a = partition_users(dataset, PartitionConfig(partitioning=scheme, num_partitions=k, seed=7))
    b = partition_users(dataset, PartitionConfig(partitioning=scheme, num_partitions=k, seed=7))
    assert np.array_equal(a.assignment, b.assignment)


def test_user_partitioning_gives_one_client_per_user(dataset) -> None:
    part = partition_users(dataset, PartitionConfig(partitioning="user"))
    assert part.num_partitions == dataset.num_users
    assert [part.users(p).tolist() for p in range(3)] == [[0], [1], [2]]


def test_region_partitions_group_users_by_first_zip_digit(dataset) -> None:
    part = partition_users(dataset, PartitionConfig(partitioning="region"))
    region = dataset.user_features["region"]
    vocab = dataset.user_feature_vocab["region"]
    for p, label in enumerate(part.labels):
        assert {vocab[c] for c in region[part.users(p)]} == {label}
    assert set(part.labels) == {"1", "2", "3", "5", "9", "other"}


def test_iid_partitions_are_balanced_and_seed_dependent(dataset) -> None:
    a = partition_users(dataset, PartitionConfig(partitioning="iid", num_partitions=4, seed=1))
    b = partition_users(dataset, PartitionConfig(partitioning="iid", num_partitions=4, seed=2))
    assert np.bincount(a.assignment).tolist() == [10, 10, 10, 10]
    assert not np.array_equal(a.assignment, b.assignment)


def test_dirichlet_with_small_alpha_skews_genres(dataset) -> None:
    genre = dominant_genre(dataset)
    skewed = partition_users(dataset, PartitionConfig(partitioning="dirichlet", num_partitions=3,
                                                      dirichlet_alpha=0.05, seed=0))  # fmt: skip
    # With a tiny alpha most partitions hold users of few dominant genres.
    per_part = [len(set(genre[skewed.users(p)].tolist())) for p in range(3) if skewed.users(p).size]
    assert min(per_part) < len(set(genre.tolist()))


def test_num_partitions_that_contradicts_the_data_is_refused(dataset) -> None:
    with pytest.raises(FedrecError, match="gives 6 partitions .* but num-partitions is 10"):
        partition_users(dataset, PartitionConfig(partitioning="region", num_partitions=10))
    with pytest.raises(FedrecError, match="more than the 40 users"):
        partition_users(dataset, PartitionConfig(partitioning="iid", num_partitions=41))


def test_out_of_range_partition_id_is_refused(dataset) -> None:
    part = partition_users(dataset, PartitionConfig(partitioning="iid", num_partitions=4))
    with pytest.raises(FedrecError, match="partition-id 4 is out of range"):
        part.users(4)


@pytest.mark.parametrize("bad,match", [
    ({"partitioning": "zipcode"}, "unknown partitioning 'zipcode'"),
    ({"partitioning": "iid", "num_partitions": 0}, "needs num-partitions >= 1"),
    ({"partitioning": "dirichlet", "num_partitions": 3, "dirichlet_alpha": 0}, "dirichlet-alpha must be > 0"),
])  # fmt: skip
def test_bad_partition_config_is_refused(bad: dict, match: str) -> None:
    with pytest.raises(FedrecError, match=match):
        PartitionConfig(**bad)
