"Shared pytest fixtures: the real corpus beside the checkout, skipped cleanly when absent."
from pathlib import Path
import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / 'shared' / 'corpus'


@pytest.fixture(scope='session')
def corpus() -> Path:
    "The folder of real recordings (`../shared/corpus`); skips the test when it is absent."
    if not (CORPUS / 'MANIFEST.md').exists(): pytest.skip('real corpus not present')
    return CORPUS


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    "Run each test in its own folder, so default files (calls.sqlite3, recordings/calls) stay out of the checkout."
    monkeypatch.chdir(tmp_path)
