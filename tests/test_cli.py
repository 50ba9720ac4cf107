"""The `controlsamp demo` table: every closed form agrees with its independent solver."""
import re

from controlsamp import cli


def test_demo_rows_agree(capsys):
    assert cli.main(["demo"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.search(r"\s\d\.\d\de[-+]\d\d\s", line)]
    assert len(rows) == len(cli.CHECKS)
    for line in rows:
        err = float(re.search(r"\s(\d\.\d\de[-+]\d\d)\s", line).group(1))
        if "Monte Carlo" in line:
            se = float(re.search(r"standard error (\S+) ", line).group(1))
            assert err < 5 * se, line
        else:
            assert err < 1e-8, line


def test_unknown_command_exits_with_usage():
    import pytest
    with pytest.raises(SystemExit):
        cli.main(["nope"])
