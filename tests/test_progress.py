"""Progress bars on standard error (the distributed one is exercised by the demo test in test_cli.py)."""

import io

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
    assert out == "" and "100% Completed" in err
    assert compute(tasks, progress=False) == [0, 1, 4, 9, 16, 25]
    assert capsys.readouterr() == ("", "")
