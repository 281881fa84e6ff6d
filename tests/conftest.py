"""Test-wide settings.

Torch runs on one thread during the tests: the networks and batches here are small, where
intra-op threads cost more than they bring on a 2-core machine (and oversubscribe it when
other processes run), and results do not depend on the thread count. The processes the tests
start (notebook kernels, command-line runs, pools) inherit one thread per math library.

``make test`` runs the suite on parallel workers (pytest-xdist, ``--dist loadgroup``). Each
worker is a process of its own, with its own one-thread setting. A test that uses a
module-scoped fixture (a fit, a Dask cluster, a simulated table) is put in the group of its
module, so that the module's tests share one worker and the fixture is built once; the other
tests are spread one by one. Work is handed out in one order, groups included: tests marked
``slow`` first, so that no worker draws a long test when the others have run out of work.

A session-scoped fixture is built once per worker: the tests of several modules that share one
carry one ``xdist_group`` marker, so that they meet on one worker: ``ar2_default_fit`` (the
default AR(2) fit) and ``dask`` (one Dask cluster of two worker processes, closed after
the group's last test). A group's tests are
handed to their worker together and run one after the other, so a module-scoped fixture is
not torn down and built again in between. (With pytest 9 the group marker reaches pytest-xdist
only through the node-id suffix that :func:`pytest_collection_modifyitems` appends.)
"""

from types import SimpleNamespace

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


@pytest.fixture(autouse=True)
def _seeded_global_generators():
    """Every test starts from one state of torch's global generator, so that what a test draws
    without a seed of its own (torch distributions draw from it) does not depend on which tests
    ran before it on its worker (pytest-xdist hands tests out in an order that varies from run
    to run: a test that drew 100 prior draws from it failed its negative control once in about
    25 orders). numpy's legacy global generator is not used here (the lint refuses it)."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ar2_default_fit():
    """``ssm-abc`` with its default search of structure and k, fitted on 10,000 AR(2) pairs
    (30 epochs), as end-to-end tests and the test of the search on a series read it: the
    task, the training pairs (float64) and the fitted method."""
    import ebm_lfi as el

    task = el.benchmarks.get("ar2")
    theta, x = el.simulate(task.simulator, task.prior, 10_000, seed=0)
    theta, x = theta.double(), x.double()
    method = el.methods.get("ssm-abc", prior=task.prior, training={"epochs": 30})
    method.fit(theta, x, seed=0)
    return SimpleNamespace(task=task, theta=theta, x=x, method=method)


@pytest.fixture
def dask_client():
    """The client of a local Dask cluster of two worker processes (:func:`servers.dask_client`),
    started once for the tests of the ``dask`` group and closed after the last of them
    (:func:`pytest_runtest_teardown`)."""
    pytest.importorskip("distributed")
    from servers import dask_client

    return dask_client()


def _in_dask_group(item: pytest.Item | None) -> bool:
    return item is not None and any(
        (mark.args[:1] or (mark.kwargs.get("name"),))[0] == "dask"
        for mark in item.iter_markers("xdist_group")
    )


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if _in_dask_group(item) and not _in_dask_group(nextitem):
        from servers import close_dask

        close_dask()


def _uses_module_fixture(item: pytest.Item) -> bool:
    # _fixtureinfo is pytest's record of the fixtures an item requests; an item without it
    # (or a pytest that renames it) is simply not grouped.
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(
        defs and defs[-1].scope in ("module", "package") for defs in info.name2fixturedefs.values()
    )


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist hands out groups largest first by default ("loadscope reorder"), which
    # would put every group before the long single tests; keep the order set below instead
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _group_suffix(item: pytest.Item) -> str:
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    return "@" + "_".join(sorted(names)) if names else ""


def _add_group_suffix(item: pytest.Item) -> None:
    # pytest-xdist's loadgroup sends the tests whose node id ends in "@<group>" to one worker;
    # it appends the suffix by assigning item._nodeid, which pytest 9 no longer reads (the id
    # lives in item._id), so that every test was spread alone. Append it here when missing.
    suffix = _group_suffix(item)
    if not suffix or item.nodeid.endswith(suffix):
        return
    node_id = getattr(item, "_id", None)
    if node_id is not None and hasattr(type(node_id), "parse"):
        item._id = type(node_id).parse(item.nodeid + suffix)
    else:
        item._nodeid = item.nodeid + suffix


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own suffixing, which it completes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if _uses_module_fixture(item) and not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    if hasattr(config, "workerinput"):  # a worker: its order is the order work is handed out
        if getattr(config.option, "loadgroup", False):
            for item in items:
                _add_group_suffix(item)
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
