"""Shared fixtures: the real UTKFace archives, named by environment variables that .ci/run sets.

Unset variable: the tests that need that file are skipped (a developer without the data).
Set but the file is missing: that is a failure, never a skip.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import pytest

UTK64_ENV = "FACEAUDIT_UTK64"
UTK200_ENV = "FACEAUDIT_UTK200"
WEIGHTS_ENV = "FACEAUDIT_WEIGHTS_DIR"
MODELS_ENV = "FACEAUDIT_MODELS_DIR"


def _required_path(env: str) -> Path:
    value = os.environ.get(env)
    if not value:
        pytest.skip(f"${env} is not set")
    path = Path(value)
    if not path.exists():
        pytest.fail(f"${env} names {path}, which does not exist")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Unpack archives into a per-session cache, not the user's ~/.cache."""
    cache = tmp_path_factory.mktemp("cache")
    previous = os.environ.get("FACEAUDIT_CACHE")
    os.environ["FACEAUDIT_CACHE"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("FACEAUDIT_CACHE", None)
    else:
        os.environ["FACEAUDIT_CACHE"] = previous


#: audit.json files already checked (path -> modification time), so a session fixture's audit is checked once.
_CHECKED_AUDITS: dict = {}
#: Where a command run without --out writes (reports/<model>, reports/demo), relative to the repository.
_DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "reports"


@pytest.fixture(autouse=True)
def _written_audits_are_sound(tmp_path_factory):
    """After each test, check every audit.json it wrote (:func:`audit_checks.check_written_audits`): under the
    session's temporary folders (tmp_path, tmp_path_factory, a chdir into them) and the default reports/ folder."""
    from audit_checks import check_written_audits

    start = time.time() - 1.0  # file times can trail the clock by a tick; _CHECKED_AUDITS skips repeats
    yield
    check_written_audits([tmp_path_factory.getbasetemp(), _DEFAULT_OUTPUT, Path.cwd() / "reports"], start,
                         skip=[os.environ.get("FACEAUDIT_CACHE")], seen=_CHECKED_AUDITS)


@pytest.fixture(scope="session")
def utk64_archive() -> Path:
    """The real UTKFace-64px.tar.gz (21,352 images)."""
    return _required_path(UTK64_ENV)


@pytest.fixture(scope="session")
def utk200_archive() -> Path:
    """The real crop_part1-200px.tar.gz (8,806 images at 200x200)."""
    return _required_path(UTK200_ENV)


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """The folder of genuine Keras ImageNet weight files (MobileNet, MobileNetV2)."""
    return _required_path(WEIGHTS_ENV)


@pytest.fixture(scope="session")
def published_models() -> Path:
    """The folder of five face-attribute models other people published (../shared/models, MIT)."""
    return _required_path(MODELS_ENV)


@pytest.fixture(scope="session")
def utk64_dataset(utk64_archive):
    """The full 64px archive scanned into a Dataset (about 10 s, once per session)."""
    from faceaudit.datasets.manifest import load_dataset

    return load_dataset(utk64_archive, progress=False)


@pytest.fixture(scope="session")
def utk_sample_dir(utk64_dataset, tmp_path_factory) -> Path:
    """A folder of 400 real UTKFace images (every race x gender present), for fast tests."""
    rng = random.Random(0)
    manifest = utk64_dataset.manifest
    chosen = []
    for _, group in manifest.groupby(["race", "gender"], observed=True):
        ids = sorted(group["image_id"])
        chosen += rng.sample(ids, 40)
    folder = tmp_path_factory.mktemp("utk_sample")
    by_id = manifest.set_index("image_id")["path"]
    for image_id in chosen:
        shutil.copy(by_id[image_id], folder / Path(image_id).name)
    return folder


#: Test modules that start a local Ray cluster: kept on one pytest-xdist worker, one cluster at a time.
RAY_MODULES = frozenset({"test_predict", "test_stream", "test_hardening"})
#: Test groups that take longest (summed seconds on this 2-core machine, 2026-12: Ray group ~390, published models
#: ~170, interrupts ~130, train ~120, remedies ~110), handed out first; the rest follow in collection order.
LONGEST_FIRST = ("ray", "test_published_models", "test_interrupts", "test_train", "test_remedies", "test_demo",
                 "test_multiworker", "test_ci_kit", "test_progress", "test_hardening_garbage", "test_export",
                 "test_hostile_inputs")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook, which reads the marks into the test ids
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``-n 2 --dist loadgroup``, as the README runs it) each test module stays on one worker, so
    its module and session fixtures are built once there, and every module that starts Ray shares one worker: two
    local clusters on two cores would only fight, and one test checks the Ray sessions left on the machine."""
    group_of = {}
    for item in items:
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        group_of[item] = "ray" if module in RAY_MODULES else module
        item.add_marker(pytest.mark.xdist_group(group_of[item]))
    # Longest groups first (pyproject turns off pytest-xdist's reordering by test count): each worker takes the next
    # group when it is free, so the two finish together instead of one running a long module alone at the end.
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of[item], len(rank)))


def pytest_collection_finish(session):
    """Fail at once when the grouping above did not reach pytest-xdist (pytest 9.2 moved the node id pytest-xdist 3.8
    appends the group to; modules then split over workers and build their training fixtures twice)."""
    grouped = getattr(session.config.option, "loadgroup", False)  # set on pytest-xdist workers only
    if grouped and session.items and "@" not in session.items[0].nodeid:
        raise pytest.UsageError("pytest-xdist did not group the tests by module (--dist loadgroup): pin a pytest it "
                                "supports (pyproject: pytest<9.2)")
