"""The generation counter that the registry bumps and routers poll."""

import threading

from heads.generation import GenerationFile
from heads.registry import ModelStore


def test_a_bump_is_atomic_and_changes_the_stamp(tmp_path):
    counter = GenerationFile(tmp_path / "store" / ".serving-generation")
    assert counter.read() == 0 and counter.stamp() is None  # nothing bumped yet, no folder either
    assert counter.bump() == 1
    first = counter.stamp()
    assert counter.bump() == 2 and counter.read() == 2 and counter.stamp() != first  # a new inode each time
    threads = [threading.Thread(target=counter.bump) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert counter.read() == 22  # no bump lost to another at the same time
    assert sorted(p.name for p in counter.path.parent.iterdir()) == [".serving-generation", ".serving-generation.lock"]
    counter.path.write_text("garbage")
    assert counter.bump() == 1  # a damaged counter is replaced; pollers compare stamps, not values


def test_a_tenant_store_bumps_the_generation_of_the_whole_model_store(tmp_path):
    acme = ModelStore.for_tenant(tmp_path / "models", "acme")
    globex = ModelStore.for_tenant(tmp_path / "models", "globex")
    assert acme.generation.path == globex.generation.path == tmp_path / "models" / ".serving-generation"
    assert ModelStore(tmp_path / "plain").generation.path == tmp_path / "plain" / ".serving-generation"
