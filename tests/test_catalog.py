"""The public catalog: built from item metadata alone, no user and no interaction in it."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import heavy_imports_of, make_tiny, write_csv, write_official_1m, write_official_100k, write_recbole

from cli import main
from shared.config import DataConfig
from shared.data.dataset import catalog_fingerprint, empty_dataset, load_dataset, load_node_dataset
from shared.data.public_catalog import build_catalog, load_catalog
from shared.data.user_schema import ML1M, published_vocabularies
from shared.errors import FedrecError


def build(source: Path, out: Path, dataset: str = "csv", *extra: str) -> int:
    return main(["catalog", "build", "--dataset", dataset, "--path", str(source), "--out", str(out), *extra])


@pytest.mark.parametrize("writer,dataset,item_file", [
    (write_official_1m, "movielens-1m", "movies.dat"), (write_official_100k, "movielens-100k", "u.item"),
    (write_recbole, "movielens-1m", "tiny.item"), (write_csv, "csv", "items.csv")])  # fmt: skip
def test_a_catalog_comes_from_the_item_file_alone(writer, dataset, item_file, tmp_path: Path) -> None:
    tiny = make_tiny(num_users=12, num_items=30)
    full = writer(tiny, tmp_path / "full")
    # The same directory with only its item file: the catalog must not change, so no user or
    # interaction file was read to make it.
    only_items = tmp_path / "items-only"
    only_items.mkdir()
    shutil.copy(full / item_file, only_items / item_file)
    assert build(full, tmp_path / "a", dataset) == 0
    assert build(only_items, tmp_path / "b", dataset) == 0
    a, b = load_catalog(tmp_path / "a"), load_catalog(tmp_path / "b")
    assert a.fingerprint == b.fingerprint and a.num_items == len(tiny.items)  # every item, rated or not
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["catalog.json", "items.csv"]


def test_the_catalog_holds_no_user_id_and_no_interaction(tmp_path: Path) -> None:
    tiny = make_tiny(num_users=12, num_items=30)
    source = write_official_1m(tiny, tmp_path / "ml")
    assert build(source, tmp_path / "cat", "movielens-1m") == 0
    manifest = json.loads((tmp_path / "cat" / "catalog.json").read_text())
    items = (tmp_path / "cat" / "items.csv").read_text().splitlines()
    assert items[0] == "item_id,title,year,genres,text" and len(items) == 1 + len(tiny.items)
    assert set(manifest) == {"format", "dataset", "fingerprint", "num_items", "genres", "user_features", "built_from",
                             "text_columns", "holds"}  # fmt: skip
    # The vocabularies are the published schema's, not the users': the tiny users' ages (19, 20,
    # ...) are not ML-1M age buckets and appear nowhere.
    assert manifest["user_features"] == {k: v[1:] for k, v in published_vocabularies("movielens-1m").items()}
    assert set(manifest["user_features"]["age"]) == set(ML1M["age"])
    ids = [line.split(",", 1)[0] for line in items[1:]]
    assert ids == tiny.items  # item file order, nothing else
    assert manifest["built_from"] == "movies.dat"


def test_movielens_texts_match_the_simulation_and_nodes_read_against_the_catalog(tmp_path: Path) -> None:
    tiny = make_tiny(num_users=20, num_items=40)
    source = write_official_1m(tiny, tmp_path / "ml")
    assert build(source, tmp_path / "cat", "movielens-1m") == 0
    catalog = load_catalog(tmp_path / "cat")
    simulated = load_dataset(DataConfig(dataset="movielens-1m", data_path=str(source)))
    text_of = dict(zip(catalog.item_ids[1:], catalog.item_text[1:]))
    assert [text_of[i] for i in simulated.item_ids[1:]] == simulated.item_text[1:]
    node = load_node_dataset(source, DataConfig(dataset="movielens-1m"), catalog)
    assert node.num_users == simulated.num_users and node.item_text == catalog.item_text
    assert catalog_fingerprint(node) == catalog.fingerprint == catalog_fingerprint(empty_dataset(catalog))
    # Embeddings of a catalog artifact are cached under its fingerprint.
    assert node.embedding_key == catalog.fingerprint and empty_dataset(catalog).num_users == 0


def test_a_changed_catalog_or_a_bad_schema_is_one_line(tmp_path: Path, capsys) -> None:
    source = write_csv(make_tiny(), tmp_path / "csv")
    (source / "user-schema.json").write_text(json.dumps({"age": ["18-24", "25-34"], "region": ["1", "2", "other"]}))
    assert build(source, tmp_path / "cat") == 0
    catalog = load_catalog(tmp_path / "cat")
    assert catalog.user_feature_vocab == {"age": ["<unknown>", "18-24", "25-34"], "region": ["<unknown>", "1", "2", "other"]}
    assert build(source, tmp_path / "cat") == 2 and "already exists" in capsys.readouterr().err
    items = tmp_path / "cat" / "items.csv"
    items.write_text(items.read_text().replace("Movie 3 (1983)", "Movie 3 (1984)"))
    with pytest.raises(FedrecError, match="changed after `fedrec catalog build`"):
        load_catalog(tmp_path / "cat")
    (source / "user-schema.json").write_text(json.dumps({"shoe-size": ["42"]}))
    assert build(source, tmp_path / "other") == 2
    err = capsys.readouterr().err
    assert "user-schema.json: unknown user feature 'shoe-size'" in err and "Traceback" not in err
    assert not (tmp_path / "other").exists()


def test_a_csv_catalog_without_a_schema_has_no_user_features(tmp_path: Path) -> None:
    source = write_csv(make_tiny(), tmp_path / "csv")
    catalog, _ = build_catalog("csv", source, None, [], None)
    assert catalog.user_feature_vocab == {}
    node = load_node_dataset(source, DataConfig(dataset="csv"), catalog)
    assert node.user_features == {} and np.array_equal(node.item_ids, catalog.item_ids)


def test_a_simulation_with_catalog_path_indexes_its_dataset_on_the_catalog(tmp_path: Path) -> None:
    from client.data import local_data

    source = write_csv(make_tiny(num_users=30, num_items=40), tmp_path / "csv")
    assert build(source, tmp_path / "cat") == 0
    catalog = load_catalog(tmp_path / "cat")
    run_config = {"dataset": "csv", "data-path": str(source), "catalog-path": str(tmp_path / "cat"),
                  "partitioning": "iid", "num-partitions": 2}  # fmt: skip
    local = local_data(run_config, {"partition-id": 0, "num-partitions": 2})
    assert catalog_fingerprint(local.dataset) == catalog.fingerprint and local.dataset.num_items == catalog.num_items
    other = write_csv(make_tiny(num_users=30, num_items=40), tmp_path / "csv2")
    with pytest.raises(FedrecError, match="describes 'csv', not 'movielens-1m'"):
        load_dataset(DataConfig(dataset="movielens-1m", data_path=str(other), catalog_path=str(tmp_path / "cat")))


# A deployed SuperNode starts a ClientApp process for every message. This one answers the catalog
# query as a node's process would and prints the catalog's fingerprint.
CATALOG_QUERY = """
import sys
from flwr.app import Context, Message, RecordDict
from client.app import app
from inprocess import server_task
data, catalog, state = sys.argv[1:4]
with server_task(1):  # the server made the message
    msg = Message(RecordDict(), 1, "query.catalog", group_id="")
msg.metadata.__dict__["_message_id"] = "m1"
node = {"partition-id": 0, "data-path": data, "catalog-path": catalog, "state-dir": state}
reply = app(msg, Context(run_id=1, node_id=1, node_config=node, state=RecordDict(),
                         run_config={"dataset": "csv", "catalog-path": catalog}))
print(reply.content["catalog"]["fingerprint"])
"""


def test_a_node_answers_the_catalog_query_without_importing_torch(tmp_path: Path) -> None:
    source = write_csv(make_tiny(num_users=12, num_items=30), tmp_path / "csv")
    assert build(source, tmp_path / "cat") == 0
    heavy, printed = heavy_imports_of(CATALOG_QUERY, str(source), str(tmp_path / "cat"), str(tmp_path / "state"))
    assert printed.splitlines()[-1] == load_catalog(tmp_path / "cat").fingerprint
    assert heavy == []
