"""`fedrec simulate --ray-address` with no Ray head there: one line, no traceback. A simulation on an
existing Ray cluster runs in the slow tier, as the resumed half of tests/test_simulation.py."""

from pathlib import Path

from cli import main
from cli.local.superlink import free_port


def test_an_unreachable_ray_address_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["simulate", "--ray-address", f"127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fedrec: error: --ray-address") and "no Ray head answers there" in err[-1]
