"""Progress bars on standard error, one style for every scheduler (the distributed one is exercised by
the demo test in test_cli.py)."""

import io
import re

import dask

from nquant.progress import TextBar, compute


def test_text_bar_draws_fraction_count_and_label():
    out = io.StringIO()
    bar = TextBar(4, "chunks", out=out, width=8, dt=0)
    for i in range(5):
        bar.update(i)
    bar.close()
    frames = out.getvalue().split("\r")[1:]
    assert [f.split("]")[0] for f in frames[:5]] == ["[        ", "[##      ", "[####    ", "[######  ", "[########"]
    assert "  0% 0/4 chunks" in frames[0] and " 50% 2/4 chunks" in frames[2] and "100% 4/4 chunks" in frames[4]
    assert out.getvalue().endswith("\n")


def test_local_compute_keeps_order_and_reports_on_stderr(capsys):
    tasks = [dask.delayed(lambda v: v * v)(i) for i in range(6)]
    assert compute(tasks, progress=True) == [0, 1, 4, 9, 16, 25]
    out, err = capsys.readouterr()
    assert out == "" and re.search(r"\] 100% 6/6 chunks \d+\.\ds\n$", err) and "  0% 0/6 chunks" in err
    with dask.config.set(scheduler="sync"):  # counts the tasks given, not the graph's, on every scheduler
        assert compute(tasks, progress=True, label="tasks") == [0, 1, 4, 9, 16, 25]
    assert re.search(r"\] 100% 6/6 tasks \d+\.\ds\n$", capsys.readouterr().err)
    assert compute(tasks, progress=False) == [0, 1, 4, 9, 16, 25]
    assert capsys.readouterr() == ("", "")
