"""Test-wide settings.

Torch runs on one thread during the tests: the networks and batches here are small, where
intra-op threads cost more than they bring on a 2-core machine (and oversubscribe it when
other processes run), and results do not depend on the thread count. The processes the tests
start (notebook kernels, command-line runs, pools) inherit one thread per math library.

``make test`` runs the suite on parallel workers (pytest-xdist, ``--dist loadgroup``). Each
worker is a process of its own, with its own one-thread setting. A test that uses a
module-scoped fixture (a fit, a Dask cluster, a simulated table) is put in the group of its
module, so that the module's tests share one worker and the fixture is built once; the other
tests are spread one by one, those marked ``slow`` first, so that no worker draws a long test
when the others have run out of work.
"""

import pytest
import torch

_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        for variable in _THREAD_VARIABLES:
            patch.setenv(variable, "1")
        yield
    torch.set_num_threads(old)


def _uses_module_fixture(item: pytest.Item) -> bool:
    # _fixtureinfo is pytest's record of the fixtures an item requests; an item without it
    # (or a pytest that renames it) is simply not grouped.
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        defs and defs[-1].scope in ("module", "package") for defs in info.name2fixturedefs.values()
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if _uses_module_fixture(item) and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    if hasattr(config, "workerinput"):  # a worker: its order is the order work is handed out
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
