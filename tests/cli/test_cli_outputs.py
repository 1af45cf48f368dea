"""Issue 9 items 7 and 13 (CLI): nothing a user owns is overwritten; a report folder holds one run;
bad inputs exit 2 with one line."""

from __future__ import annotations

import numpy as np
import pytest

from pyro_nf.cli.command import main
from pyro_nf.comparison.folder import finish_folder, start_folder

FAST = ["--steps", "15", "--num-samples", "40", "--diagnose-samples", "40", "--quiet"]


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("pyro-nf: error:"), err
    return err


def test_empty_out_is_refused_and_nothing_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "banana", "--guide", "meanfield", "--out", "", *FAST]) == 2
    assert "must be named" in _err(capsys)
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file_or_under_a_file_exits_2(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("mine")
    assert main(["compare", "banana", "--guides", "meanfield", "--out", str(f), *FAST]) == 2
    assert "is an existing file" in _err(capsys)
    assert main(["fit", "banana", "--guide", "meanfield", "--out", str(f / "sub"), *FAST]) == 2
    assert "which is a file" in _err(capsys)
    assert f.read_text() == "mine"


def test_users_folder_is_not_overwritten_without_overwrite(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "table.csv").write_text("my own table\n")
    assert main(["compare", "banana", "--guides", "meanfield", "--out", str(out), *FAST]) == 2
    assert "--overwrite" in _err(capsys)
    assert (out / "table.csv").read_text() == "my own table\n"
    (out / "notes.txt").write_text("keep me")
    assert (
        main(
            [
                "compare",
                "banana",
                "--guides",
                "meanfield",
                "--reference",
                "none",
                "--out",
                str(out),
                "--overwrite",
                *FAST,
            ]
        )
        == 0
    )
    assert (out / "table.csv").read_text() != "my own table\n"
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_report_folder_never_mixes_two_runs(tmp_path):
    out = tmp_path / "report"
    folder = start_folder(out)
    for name in ("table.csv", "diagonal.nc"):
        (folder / name).write_text("run 1")
    finish_folder(folder, ["table.csv", "diagonal.nc"], kind="compare")
    (folder / "notes.txt").write_text("mine")  # the user's, added later
    folder = start_folder(out)  # an earlier report: replaced without --overwrite, its files removed
    (folder / "table.csv").write_text("run 2")
    finish_folder(folder, ["table.csv"], kind="compare")
    assert sorted(p.name for p in out.iterdir()) == [".pyro_nf_report.json", "notes.txt", "table.csv"]
    assert (out / "table.csv").read_text() == "run 2"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["fit", "banana", "--seed", "-1"], "--seed"),
        (["compare", "banana", "--guides", "iaf,iaf"], "more than once: iaf"),
        (["fit", "banana", "--lr", "1e6"], "learning rate in (0, 1]"),
    ],
)
def test_bad_options_exit_2_with_one_line(argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "o"), *FAST]) == 2
    assert message in _err(capsys)


def test_infinite_data_exit_2(tmp_path, capsys):
    models = tmp_path / "m.py"
    models.write_text(
        "import pyro, pyro.distributions as dist\n"
        "def model(y):\n"
        "    mu = pyro.sample('mu', dist.Normal(0., 1.))\n"
        "    with pyro.plate('d', len(y)):\n"
        "        pyro.sample('y', dist.Normal(mu, 1.), obs=y)\n"
    )
    csv = tmp_path / "d.csv"
    csv.write_text("y\n1.0\ninf\n")
    npz = tmp_path / "d.npz"
    np.savez(npz, y=np.array([1.0, -np.inf]))
    for data in (csv, npz):
        assert main(["fit", f"{models}:model", "--data", str(data), "--out", str(tmp_path / "o"), *FAST]) == 2
        assert "infinite" in _err(capsys)
