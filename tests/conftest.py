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
