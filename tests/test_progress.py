"""sa_utils.progress: widgets for people, whole text lines for unattended (papermill) runs."""

from __future__ import annotations

import io

import pytest

from sa_utils.progress import mode, progress_bar


def test_text_mode_writes_whole_lines_without_redraws(monkeypatch):
    monkeypatch.setenv("SA_PROGRESS", "text")
    monkeypatch.setenv("SA_PROGRESS_SECONDS", "0")  # a line per update, to see that each is whole
    out = io.StringIO()
    bar = progress_bar(total=3, desc="steps", file=out)
    for _ in range(3):
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b[" not in text
    lines = text.splitlines()
    assert lines[0].startswith("steps:") and "0/3" in lines[0]
    assert "3/3" in lines[-1] and all(line.strip() for line in lines)


def test_text_mode_bar_that_does_not_stay_leaves_no_blank_lines(monkeypatch):
    monkeypatch.setenv("SA_PROGRESS", "text")
    out = io.StringIO()
    for _ in progress_bar(range(5), desc="inner", leave=False, file=out):
        pass
    assert all(line.strip() for line in out.getvalue().splitlines())


def test_auto_mode_is_tqdm_auto(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.delenv("SA_PROGRESS", raising=False)
    assert mode() == "auto"
    bar = progress_bar(total=1, disable=True)
    assert isinstance(bar, tqdm)


@pytest.mark.parametrize(
    "name,value,word",
    [
        ("SA_PROGRESS", "widgets", "SA_PROGRESS='widgets'"),
        ("SA_PROGRESS_SECONDS", "soon", "SA_PROGRESS_SECONDS='soon'"),
    ],
)
def test_bad_progress_settings_are_named(monkeypatch, name, value, word):
    monkeypatch.setenv("SA_PROGRESS", "text")
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=word):
        progress_bar(total=1)


def test_text_mode_postfix_updates_do_not_add_lines(monkeypatch):
    monkeypatch.setenv("SA_PROGRESS", "text")
    monkeypatch.setenv("SA_PROGRESS_SECONDS", "3600")
    out = io.StringIO()
    bar = progress_bar(total=100, desc="SA", file=out)
    for i in range(100):
        bar.set_postfix(loss=f"{i:.1f}")
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) <= 3, lines  # the first line, maybe one timed line, the last
    assert "100/100" in lines[-1] and "loss=99.0" in lines[-1]


def test_text_mode_turns_off_the_loading_bars_of_diffusers_and_transformers(monkeypatch):
    pytest.importorskip("diffusers")
    import diffusers.utils.logging as dlog
    import huggingface_hub.utils as hub
    import transformers.utils.logging as tlog

    from sa_utils.progress import quiet_library_bars

    monkeypatch.setenv("SA_PROGRESS", "auto")
    try:
        dlog.enable_progress_bar()  # an earlier test's text-mode load may have turned them off
        tlog.enable_progress_bar()
        quiet_library_bars()
        assert dlog.is_progress_bar_enabled() and tlog.is_progress_bar_enabled(), "auto mode leaves them alone"
        monkeypatch.setenv("SA_PROGRESS", "text")
        quiet_library_bars()
        assert not dlog.is_progress_bar_enabled() and not tlog.is_progress_bar_enabled()
    finally:
        dlog.enable_progress_bar()
        tlog.enable_progress_bar()
        hub.enable_progress_bars()
