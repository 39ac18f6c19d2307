"""The daemon's rotating log files (docs/host.md#logs names), written on a real directory."""
from __future__ import annotations

import logging
import os

from iofogd.logfiles import LOG_FORMAT, LogFile


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"test-logfiles-{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    return logger


def test_files_rotate_newest_first_and_stop_at_count(tmp_path) -> None:  # type: ignore[no-untyped-def]
    handler = LogFile(str(tmp_path), max_bytes=400, count=3)
    logger = _logger(handler)
    for n in range(60):
        logger.info("record %03d", n)
    handler.close()
    assert sorted(os.listdir(tmp_path)) == ["iofog-agent.0.log", "iofog-agent.1.log", "iofog-agent.2.log"]
    texts = [(tmp_path / f"iofog-agent.{n}.log").read_text() for n in range(3)]
    assert all(0 < len(t.encode()) <= 400 for t in texts)
    assert "record 059" in texts[0]
    # .1 holds what came just before .0, .2 what came before that; the oldest are gone.
    last = [int(t.strip().splitlines()[-1].rsplit(" ", 1)[1]) for t in texts]
    assert last[0] > last[1] > last[2]
    assert "record 000" not in "".join(texts)


def test_one_file_starts_again_within_its_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    handler = LogFile(str(tmp_path), max_bytes=300, count=1)
    logger = _logger(handler)
    for n in range(40):
        logger.info("record %03d", n)
    handler.close()
    assert os.listdir(tmp_path) == ["iofog-agent.0.log"]
    text = (tmp_path / "iofog-agent.0.log").read_text()
    assert len(text.encode()) <= 300 and "record 039" in text


def test_an_existing_file_is_appended_to(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "iofog-agent.0.log").write_text("from the last run\n")
    handler = LogFile(str(tmp_path), max_bytes=10_000, count=2)
    _logger(handler).info("this run")
    handler.close()
    text = (tmp_path / "iofog-agent.0.log").read_text()
    assert text.startswith("from the last run\n") and "this run" in text
