"""An edge node's data: exported partition by partition, read back on the federation's catalog."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_tiny, write_csv

from client.data import local_data
from cli import main
from shared.config import DataConfig
from shared.data.dataset import catalog_fingerprint, check_catalog_fingerprint, load_dataset, load_node_dataset
from shared.errors import FedrecError


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return write_csv(make_tiny(num_users=40, num_items=60, seed=3), tmp_path / "global")


def export(source: Path, out: Path, pid: int) -> int:
    return main(["data", "export-partition", "--dataset", "csv", "--path", str(source),
                 "--partitioning", "iid", "--num-partitions", "3", "--partition-id", str(pid),
                 "--out", str(out)])  # fmt: skip


def test_a_node_reads_back_exactly_its_simulated_partition(source: Path, tmp_path: Path) -> None:
    run_config = {"dataset": "csv", "data-path": str(source), "partitioning": "iid", "num-partitions": 3}
    for pid in range(3):
        assert export(source, tmp_path / f"node{pid}", pid) == 0
        simulated = local_data(run_config, {"partition-id": pid, "num-partitions": 3})
        node = local_data(run_config, {"partition-id": pid, "data-path": str(tmp_path / f"node{pid}")})
        sim_users = {simulated.dataset.user_ids[u]: u for u in simulated.users}
        assert sorted(sim_users) == sorted(node.dataset.user_ids)
        for u, uid in enumerate(node.dataset.user_ids):
            assert np.array_equal(node.dataset.sequence(u), simulated.dataset.sequence(sim_users[uid]))
            for name, codes in node.dataset.user_features.items():
                assert codes[u] == simulated.dataset.user_features[name][sim_users[uid]]
        assert node.dataset.item_text == simulated.dataset.item_text  # the catalog, not the node's items


def test_export_refuses_to_overwrite_and_writes_nothing_on_error(source: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "node"
    assert export(source, out, 0) == 0
    assert export(source, out, 1) == 2
    assert "already exists" in capsys.readouterr().err
    assert export(source, tmp_path / "bad", 7) == 2  # partition out of range
    assert not (tmp_path / "bad").exists() and not list(tmp_path.glob(".bad*"))


def test_an_export_holds_only_its_partitions_users(source: Path, tmp_path: Path) -> None:
    from shared.config import PartitionConfig
    from shared.data.partition import partition_users

    dataset = load_dataset(DataConfig(dataset="csv", data_path=str(source)))
    partition = partition_users(dataset, PartitionConfig(partitioning="iid", num_partitions=3))
    for pid in range(3):
        assert export(source, tmp_path / f"node{pid}", pid) == 0
        mine = set(dataset.user_ids[partition.users(pid)])
        inter = pd.read_csv(tmp_path / f"node{pid}" / "interactions.csv", dtype=str)
        users = pd.read_csv(tmp_path / f"node{pid}" / "users.csv", dtype=str)
        assert set(inter["user_id"]) == mine and set(users["user_id"]) == mine and len(users) == len(mine)
        # No item file: the items are the public catalog's, which travels on its own.
        assert sorted(p.name for p in (tmp_path / f"node{pid}").iterdir()) == ["interactions.csv", "users.csv"]


def test_items_outside_the_catalog_are_refused_naming_the_file_and_line(source: Path, tmp_path: Path) -> None:
    assert export(source, tmp_path / "node", 0) == 0
    inter = pd.read_csv(tmp_path / "node" / "interactions.csv", dtype=str)
    inter.loc[4, "item_id"] = "9999"
    inter.to_csv(tmp_path / "node" / "interactions.csv", index=False)
    catalog = load_dataset(DataConfig(dataset="csv", data_path=str(source)))
    with pytest.raises(FedrecError, match=r"interactions.csv line 6: item_id '9999' is not in the catalog"):
        load_node_dataset(tmp_path / "node", DataConfig(dataset="csv"), catalog)
    assert main(["catalog", "build", "--dataset", "csv", "--path", str(source), "--out", str(tmp_path / "cat")]) == 0
    with pytest.raises(FedrecError, match=r"interactions.csv line 6: item_id '9999'"):
        local_data({"dataset": "csv"}, {"partition-id": 0, "data-path": str(tmp_path / "node"),
                                        "catalog-path": str(tmp_path / "cat")})  # fmt: skip


def test_a_node_on_a_catalog_artifact_reads_nothing_but_its_files_and_the_catalog(source: Path, tmp_path: Path) -> None:
    assert export(source, tmp_path / "node", 1) == 0
    assert main(["catalog", "build", "--dataset", "csv", "--path", str(source), "--out", str(tmp_path / "cat")]) == 0
    shutil.rmtree(source)  # the global data is gone: the node needs only its files and the catalog
    # The run config's min-interactions (3) is ignored: the node filters with its own (7).
    node = local_data({"dataset": "movielens-1m", "min-interactions": 3},
                      {"partition-id": 1, "data-path": str(tmp_path / "node"), "catalog-path": str(tmp_path / "cat"),
                       "min-interactions": 7})  # fmt: skip
    assert node.dataset.name == "csv" and node.scheme == "node"
    # Filtering happens on the node, over its own users.
    inter = pd.read_csv(tmp_path / "node" / "interactions.csv", dtype=str)
    assert node.dataset.num_users == int((inter["user_id"].value_counts() >= 7).sum()) > 0


def test_a_missing_node_data_path_is_one_clear_error(source: Path, tmp_path: Path) -> None:
    with pytest.raises(FedrecError, match="no such directory"):
        local_data({"dataset": "csv", "data-path": str(source)}, {"partition-id": 0, "data-path": str(tmp_path / "x")})


def test_a_node_on_another_catalog_refuses_to_train(source: Path, tmp_path: Path) -> None:
    assert export(source, tmp_path / "node", 0) == 0
    catalog = load_dataset(DataConfig(dataset="csv", data_path=str(source)))
    node = load_node_dataset(tmp_path / "node", DataConfig(dataset="csv"), catalog)
    check_catalog_fingerprint(node, catalog_fingerprint(catalog))  # the same catalog: accepted
    other = write_csv(make_tiny(num_users=40, num_items=61, seed=3), tmp_path / "other")
    with pytest.raises(FedrecError, match="differs from the server's"):
        check_catalog_fingerprint(node, catalog_fingerprint(load_dataset(DataConfig(dataset="csv", data_path=str(other)))))
