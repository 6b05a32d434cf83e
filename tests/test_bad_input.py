"""Every bad input gets one line naming the file and row or column, exit 2, and no traceback."""

from pathlib import Path

import pytest
from conftest import Tiny, write_official_1m

from cli import main
from shared.errors import FedrecError


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("fedrec: error:")]
    assert "Traceback" not in "\n".join(err)
    assert len(errors) == 1, err
    return code, errors[0]


def info(capsys: pytest.CaptureFixture, d: Path) -> str:
    code, message = run(capsys, "data", "info", "--dataset", "csv", "--path", str(d))
    assert code == 2
    return message


def rewrite(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


def test_unknown_dataset_name(capsys) -> None:
    code, msg = run(capsys, "data", "info", "--dataset", "netflix")
    assert code == 2 and "unknown dataset 'netflix'" in msg and "movielens-1m" in msg


def test_path_that_does_not_exist(capsys, tmp_path: Path) -> None:
    msg = info(capsys, tmp_path / "nope")
    assert "no such directory" in msg and "nope" in msg


def test_missing_or_renamed_column(capsys, csv_dir: Path) -> None:
    rewrite(csv_dir / "interactions.csv", "timestamp", "time")
    msg = info(capsys, csv_dir)
    assert "interactions.csv: missing column 'timestamp'" in msg and "time" in msg


def test_empty_file(capsys, csv_dir: Path) -> None:
    (csv_dir / "items.csv").write_text("")
    assert "items.csv: file is empty" in info(capsys, csv_dir)


def test_header_without_rows(capsys, csv_dir: Path) -> None:
    (csv_dir / "interactions.csv").write_text("user_id,item_id,timestamp\n")
    assert "interactions.csv: has a header but no rows" in info(capsys, csv_dir)


def test_non_numeric_timestamp(capsys, tiny: Tiny, csv_dir: Path) -> None:
    u, i, r, t = tiny.rows[4]
    rewrite(csv_dir / "interactions.csv", f"{u},{i},{t},{r}", f"{u},{i},yesterday,{r}")
    msg = info(capsys, csv_dir)
    assert "interactions.csv line 6, column 'timestamp': 'yesterday' is not a number" in msg


def test_duplicate_item_ids(capsys, csv_dir: Path) -> None:
    with open(csv_dir / "items.csv", "a") as f:
        f.write('7,"Another Movie 7",1999,Drama\n')
    msg = info(capsys, csv_dir)
    assert "items.csv line 32: duplicate item_id '7' (first on line 8)" in msg


def test_interaction_with_unknown_item(capsys, tiny: Tiny, csv_dir: Path) -> None:
    u, i, r, t = tiny.rows[2]
    rewrite(csv_dir / "interactions.csv", f"{u},{i},{t},{r}", f"{u},999,{t},{r}")
    msg = info(capsys, csv_dir)
    assert "interactions.csv line 4: item_id '999' is not in items.csv" in msg


def test_text_that_is_not_utf8(capsys, csv_dir: Path) -> None:
    items = csv_dir / "items.csv"
    items.write_bytes(items.read_bytes().replace(b"Movie 3", "Movie é".encode("latin-1")))
    assert "items.csv line 4: text is not valid UTF-8" in info(capsys, csv_dir)


def test_users_with_too_few_interactions_are_dropped_and_reported(capsys, csv_dir: Path) -> None:
    code = main(["data", "info", "--dataset", "csv", "--path", str(csv_dir),
                 "--min-interactions", "9"])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0
    assert "dropped" in out.out and "users with fewer than 9 interactions" in out.out
    assert "dropped" in out.err  # the warning is logged too


def test_official_file_errors_name_the_file_and_line(capsys, tiny: Tiny, tmp_path: Path) -> None:
    d = write_official_1m(tiny, tmp_path / "ml1m")
    lines = (d / "ratings.dat").read_text().splitlines()
    lines[9] = lines[9].rsplit("::", 1)[0] + "::12x"
    (d / "ratings.dat").write_text("\n".join(lines) + "\n")
    code, msg = run(capsys, "data", "info", "--dataset", "movielens-1m", "--path", str(d))
    assert code == 2 and "ratings.dat line 10, column 'timestamp': '12x' is not a number" in msg


def test_bad_partitioning_request(capsys, csv_dir: Path) -> None:
    code, msg = run(capsys, "data", "info", "--dataset", "csv", "--path", str(csv_dir),
                    "--partitioning", "region", "--num-partitions", "3")  # fmt: skip
    assert code == 2 and "num-partitions is 3" in msg


def test_csv_dataset_without_path(capsys) -> None:
    code, msg = run(capsys, "data", "info", "--dataset", "csv")
    assert code == 2 and "--path" in msg


@pytest.mark.parametrize("pair,key", [("target-epsilon=-1", "target-epsilon"), ("num-server-rounds=0", "num-server-rounds"),
                                      ("strategy=fedfoo", "strategy")])  # fmt: skip
def test_simulate_refuses_a_bad_run_config_before_anything_starts(capsys, monkeypatch, pair, key) -> None:
    import cli.local.superlink

    def never(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a SuperLink was started for a run config that cannot run")

    monkeypatch.setattr(cli.local.superlink, "local_superlink", never)
    code, message = run(capsys, "simulate", "--num-supernodes", "2", "--run-config", pair)
    assert code == 2 and key in message


def test_one_client_per_user_defaults_to_central_dp_under_secure_aggregation() -> None:
    from cli.simulate import private_mode

    config = {"partitioning": "user", "dp": True}
    assert private_mode({}, config) == {"dp": False, "central-dp": True, "secure-aggregation": True}
    assert private_mode({"dp": True}, config) == {}  # asked for local DP explicitly
    assert private_mode({}, {"partitioning": "region", "dp": True}) == {}


def test_a_run_that_fails_inside_flower_ends_with_the_serverapps_own_error(capfd) -> None:
    """`flwr run --stream` exits 0 when the ServerApp it streams fails; the streamed log's own
    `fedrec: error:` line is what the last line reports."""
    import os
    import sys

    from cli.local.superlink import run_streamed

    script = "print('INFO starting'); print('ERROR flwr.fedrec: fedrec: error: pretrained /x: no such directory')"
    code, error = run_streamed([sys.executable, "-c", script], dict(os.environ))
    assert code == 0 and error == "pretrained /x: no such directory"
    assert "INFO starting" in capfd.readouterr().out  # passed through as it came


def test_the_run_is_printed_beside_its_baselines_on_the_same_users(tmp_path: Path, capsys) -> None:
    from cli.simulate import read_evaluation, side_by_side

    popularity = {"full": {"hr@10": 0.03, "ndcg@10": 0.017}, "sampled": {"hr@10": 0.45, "ndcg@10": 0.25}}
    pretrained = {"retrieval": {}, "ranking": {"full": {"hr@10": 0.08, "ndcg@10": 0.04},
                                               "sampled": {"hr@10": 0.6, "ndcg@10": 0.3}}}  # fmt: skip
    run = {"test": {"ranking-full-ndcg@10": 0.5}, "test_non_consented": {"ranking-full-hr@10": 0.09,
           "ranking-full-ndcg@10": 0.048, "ranking-sampled-hr@10": 0.59, "ranking-sampled-ndcg@10": 0.35}}  # fmt: skip
    table = side_by_side(run, {"popularity": popularity, "pretrained": pretrained})
    assert "users who did not consent" in table and "| full NDCG@10 | 0.0170 | 0.0400 | 0.0480 |" in table
    assert "| sampled HR@10 | 0.4500 | 0.6000 | 0.5900 |" in table
    (tmp_path / "other.json").write_text('{"rounds": 3}')
    for path, why in ((tmp_path / "none.json", "no such file"), (tmp_path / "other.json", "not a `fedrec evaluate")):
        with pytest.raises(FedrecError, match=why):
            read_evaluation(path)