"""Shared fixtures."""

import shutil

import pytest


@pytest.fixture
def java():
    """coco-caption's PTB tokenizer and METEOR run on Java 17, which .ci/run installs where
    it is missing; without it these tests fail rather than skip."""
    path = shutil.which("java")
    assert path is not None, "Java is not installed (apt-get install openjdk-17-jre-headless)"
    return path


@pytest.fixture(scope="session")
def tiny_quickstart(tmp_path_factory):
    """`vlp quickstart --tiny --ablation` run once for the whole session (it takes minutes), shared
    by the main-job tests and the server tests: (output directory, what it printed,
    seconds it took)."""
    import io
    import time
    from contextlib import redirect_stdout

    from vlp.cli import main

    out = tmp_path_factory.mktemp("quickstart")
    buffer = io.StringIO()
    start = time.perf_counter()
    with redirect_stdout(buffer):
        assert main(["quickstart", "--tiny", "--ablation", "--out", str(out)]) == 0
    return out, buffer.getvalue(), time.perf_counter() - start
