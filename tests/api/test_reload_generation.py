"""The operator's reload reaches every worker of a router: two TenantHeads on one store and one
spool folder stand for two gunicorn workers (test_e2e.py does it with a real gunicorn)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from api.core.reload_generation import FILE_NAME, ReloadGeneration
from api.core.tenant_heads import TenantHeads


def rewrite_unseen(pointer: Path, old: str, new: str) -> None:
    """Point serving.json's primary from `old` to `new` in place, keeping its inode, size and
    modification time: a change the store's fingerprint does not show, so no poll sees it (a
    copy that keeps the file's times, a clock step); only a reload of every state reveals it."""
    before = pointer.stat()
    text = pointer.read_text()
    changed = text.replace(f'\n  "primary": "{old}"', f'\n  "primary": "{new}"')
    assert changed != text and len(changed) == len(text)  # version ids have one length
    with open(pointer, "r+") as f:
        f.write(changed)
    os.utime(pointer, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = pointer.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def test_a_reload_in_one_worker_reaches_the_others_at_their_next_poll(store, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="api.core.tenant_heads")
    spool = tmp_path / "spool"
    workers = [TenantHeads(store.root.parent, generation=ReloadGeneration(spool / FILE_NAME)) for _ in range(2)]
    for worker in workers:
        worker.refresh()
    old = store.serving_version("intents")
    new = next(v for v in store.versions("intents") if v != old)
    rewrite_unseen(store.root / "intents" / "serving.json", old, new)
    for worker in workers:
        worker.poll()
        assert worker.get("default", "intents").primary.version == old  # the polls cannot see it
        assert worker.reload_generation == 0

    generation, reports = workers[0].reload_everywhere()
    assert generation == 1 and reports["default"].loaded == [f"intents: primary {new}"]
    assert workers[0].get("default", "intents").primary.version == new and workers[0].reload_generation == 1
    assert workers[1].get("default", "intents").primary.version == old  # until its next poll
    assert workers[1].poll()["default"].loaded == [f"intents: primary {new}"]
    assert workers[1].get("default", "intents").primary.version == new and workers[1].reload_generation == 1
    assert "reload generation 1 asked by an operator" in caplog.text
    assert workers[1].poll() == {} and workers[0].poll() == {}  # once: nothing moved since

    assert workers[1].reload_everywhere()[0] == 2  # any worker may take the next one
    assert [w.reload_generation for w in (workers[1], workers[0])] == [2, 1]
    workers[0].poll()
    assert workers[0].reload_generation == 2


def test_the_generation_file(tmp_path, caplog):
    path = tmp_path / "spool" / FILE_NAME
    generation = ReloadGeneration(path)
    assert (generation.read(), generation.applied, generation.pending()) == (0, 0, None)  # no spool folder yet
    assert generation.bump() == 1 and generation.bump() == 2 and path.read_text() == "2\n"
    assert generation.pending() == 2 and ReloadGeneration(path).applied == 2  # a worker starting later
    generation.applied = 2
    path.unlink()  # the spool emptied: a bump afterwards restarts at 1, which still differs from 2
    assert generation.pending() == 0
    path.write_text("garbage")
    assert generation.read() is None and generation.pending() is None  # unreadable: reload what changed only
    generation.read()
    assert caplog.text.count("cannot read the reload generation") == 1  # logged once, not at every poll
    assert generation.bump() == 1 and generation.pending() == 1  # a bump repairs it


def test_without_a_generation_the_reload_reaches_its_one_process(store):
    heads = TenantHeads(store.root.parent)
    heads.refresh()
    generation, reports = heads.reload_everywhere()
    assert generation is None and heads.reload_generation == 0 and list(reports) == ["default"]
