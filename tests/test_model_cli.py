"""fedrec train / evaluate --checkpoint / recommend, end to end on tiny data."""

import json

import pytest

from cli import main

SMALL = ["--dim", "16", "--num-layers", "1", "--max-len", "12", "--batch-size", "8",
         "--num-negatives", "8", "--retrieve-top-n", "10"]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from conftest import make_tiny, write_csv

    data = write_csv(make_tiny(), tmp_path_factory.mktemp("d") / "csv")
    out = tmp_path_factory.mktemp("ckpt") / "model"
    code = main(["train", "--dataset", "csv", "--path", str(data), "--output", str(out),
                 "--epochs", "2", "--cache-dir", str(tmp_path_factory.mktemp("c")), *SMALL])  # fmt: skip
    assert code == 0
    return out, data


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [ln for ln in err.splitlines() if ln.startswith("fedrec: error:")][0]


def test_train_writes_checkpoint_and_metrics(checkpoint) -> None:
    out, _ = checkpoint
    assert {"config.json", "model.safetensors", "metrics.json"} <= {p.name for p in out.iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 2 and len(metrics["history"]) == 2
    assert set(metrics["test"]) == {"retrieval", "ranking"}


def test_evaluate_checkpoint_json_has_a_block_per_stage(checkpoint, tmp_path, capsys) -> None:
    out, data = checkpoint
    code = main(["evaluate", "--checkpoint", str(out), "--dataset", "csv", "--path", str(data),
                 "--json", str(tmp_path / "m.json")])  # fmt: skip
    assert code == 0
    result = json.loads((tmp_path / "m.json").read_text())
    assert set(result) == {"retrieval", "ranking"}
    assert set(result["retrieval"]) == set(result["ranking"]) == {"full", "sampled"}
    assert "recall@100" in result["retrieval"]["full"]
    assert {"hr@10", "ndcg@10", "mrr"} <= set(result["ranking"]["sampled"])


def test_recommend_prints_titles_for_known_and_cold_users(checkpoint, capsys) -> None:
    out, data = checkpoint
    assert main(["recommend", "--checkpoint", str(out), "--user", "3", "--path", str(data), "-k", "4"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("Movie ") == 4
    assert main(["recommend", "--checkpoint", str(out), "--history", "1,2,3", "-k", "3"]) == 0
    assert capsys.readouterr().out.count("Movie ") == 3


@pytest.mark.parametrize("argv,message", [
    (["--user", "999"], "unknown user id '999'"),
    (["--history", "1,nope"], "unknown item 'nope'"),
])  # fmt: skip
def test_recommend_bad_input(checkpoint, capsys, argv, message) -> None:
    out, data = checkpoint
    assert main(["recommend", "--checkpoint", str(out), "--path", str(data), *argv]) == 2
    assert message in error_line(capsys)


def test_missing_checkpoint(capsys, tmp_path) -> None:
    assert main(["recommend", "--checkpoint", str(tmp_path / "none"), "--history", "1"]) == 2
    assert "no such directory" in error_line(capsys)


def test_dataset_that_does_not_match_the_checkpoint(checkpoint, tmp_path, capsys) -> None:
    from conftest import make_tiny, write_csv

    out, _ = checkpoint
    other = write_csv(make_tiny(num_users=8, num_items=20, seed=4), tmp_path / "other")
    assert main(["evaluate", "--checkpoint", str(out), "--dataset", "csv", "--path", str(other)]) == 2
    assert "does not match the checkpoint's item catalog" in error_line(capsys)
