"`artist-hotline simulate` against a real server that has PUBLIC_URL set: signed for the public URL, it completes the call."
import os, signal, socket, subprocess, sys

import pytest

from conftest import wait_health
from artist_hotline.cli import main
from test_flood import SERVER

TOKEN, PUBLIC = 'cli-test-token', 'https://hotline.example.org'


@pytest.fixture
def public_server(tmp_path):
    with socket.socket() as sk:
        sk.bind(('127.0.0.1', 0)); port = sk.getsockname()[1]
    env = dict(os.environ, HOST='127.0.0.1', PORT=str(port), DATABASE_URL=f'sqlite:///{tmp_path}/calls.sqlite3', INSIGHTS='false',
               STORE_SPILL=str(tmp_path / 'pending.jsonl'), TWILIO_AUTH_TOKEN=TOKEN, PUBLIC_URL=PUBLIC)
    proc = subprocess.Popen([sys.executable, '-c', SERVER], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f'http://127.0.0.1:{port}'
    wait_health(port, proc)
    yield base
    proc.send_signal(signal.SIGTERM); proc.communicate(timeout=60)


def test_simulate_signs_for_the_public_url(public_server, capsys):
    assert main(['simulate', public_server, '--say', 'hello there', '--auth-token', TOKEN, '--public-url', PUBLIC, '--speed', '0']) == 0
    out = capsys.readouterr().out
    assert 'Per caller turn, as the caller heard it' in out and "'marks_echoed'" in out, out  # the call went through, turn measured
    assert main(['simulate', public_server, '--say', 'hello', '--auth-token', TOKEN, '--speed', '0']) == 1
    assert 'pass it as --public-url' in capsys.readouterr().err
