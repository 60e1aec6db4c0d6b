"""Load: 8 concurrent generations on the tiny models all complete, in queue order, none lost, and the server's
memory comes back to within 10 % of its level before; a full queue refuses clearly and the server goes on."""

from __future__ import annotations

import time

import pytest
from app_support import launch_studio, recipe_of

N = 8
ARGS = dict(base="shapes-base", motion="shapes-motion", prompt="a blue square moving up", steps=8, frames=8,
            width=32, height=32, fmt="gif")


@pytest.fixture(scope="module")
def server(shapes_env, tmp_path_factory):
    demo, url, studio = launch_studio(tmp_path_factory.mktemp("models"), tmp_path_factory.mktemp("out"),
                                      queue_size=16)
    yield url, studio
    demo.close()


def rss() -> int:
    import psutil

    from motion_adapters.app.studio import release_memory

    release_memory()
    return psutil.Process().memory_info().rss


def queued(job, timeout: float = 60.0):
    """Wait until the server has put ``job`` in its queue (or started it); returns the last status."""
    from gradio_client.utils import Status

    deadline = time.time() + timeout
    while time.time() < deadline:
        st = job.status()
        if st.code not in (Status.STARTING, Status.JOINING_QUEUE):
            return st
        time.sleep(0.005)
    raise AssertionError("the request never reached the queue")


def test_concurrent_generations_complete_in_queue_order_and_memory_returns(server, record_property):
    from gradio_client import Client

    url, studio = server
    client = Client(url, verbose=False)
    client.predict(**ARGS, seed=1, api_name="/generate")  # warm-up: builds the pipeline
    client.predict(**ARGS, seed=2, api_name="/generate")
    before = rss()
    done: list[int] = []
    jobs, ranks = [], []
    t0 = time.perf_counter()
    for i in range(N):
        job = client.submit(**ARGS, seed=100 + i, api_name="/generate")
        job.add_done_callback(lambda _f, i=i: done.append(i))
        ranks.append(queued(job).rank)
        jobs.append(job)
    waiting = sum(not j.done() for j in jobs)
    results = [j.result(timeout=600) for j in jobs]
    seconds = time.perf_counter() - t0
    after = rss()
    seeds = [recipe_of(r)["seed"] for r in results]
    record_property("load", {"rss_before_mb": before / 2**20, "rss_after_mb": after / 2**20, "order": done,
                             "ranks": ranks, "seconds": seconds})
    print(f"\nload: {N} requests in {seconds:.1f}s, completion order {done}, queue ranks {ranks}, "
          f"RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB ({(after - before) / before:+.1%})")
    assert waiting >= N // 2, "the requests were not outstanding together"
    assert seeds == [100 + i for i in range(N)], "a result was lost or mixed up"
    assert done == list(range(N)), f"completed out of queue order: {done}"
    assert studio.builds == 1
    assert abs(after - before) <= 0.10 * before, f"RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB"


def test_a_full_queue_refuses_clearly_and_the_server_goes_on(shapes_env, tmp_path):
    from gradio_client import Client

    demo, url, studio = launch_studio(tmp_path / "models", tmp_path / "out", queue_size=2)
    try:
        client = Client(url, verbose=False)
        jobs = [client.submit(**ARGS, seed=i, api_name="/generate") for i in range(7)]
        ok, refused = 0, []
        for job in jobs:
            try:
                job.result(timeout=600)
                ok += 1
            except Exception as e:  # noqa: BLE001 - the client raises its own error types
                refused.append(str(e))
        assert refused, "a queue of 2 accepted 7 requests at once"
        assert all("full" in m.lower() for m in refused), refused
        assert ok >= 1
        assert recipe_of(client.predict(**ARGS, seed=9, api_name="/generate"))["seed"] == 9
    finally:
        demo.close()
