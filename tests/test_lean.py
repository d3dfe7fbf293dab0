"The lean install: without the `offline` and `workbench` extras, `serve` runs the cloud path, and a subcommand that needs an extra says which one to install."
import os, socket, subprocess, sys
from pathlib import Path

import pytest

from conftest import wait_health
from artist_hotline.cli import EXTRAS
from artist_hotline.settings import ENV_NAMES

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, '-c', 'import sys; from artist_hotline.cli import main; sys.exit(main())']


def lean_env(**kw) -> dict:
    "No hotline setting, and the extras' modules hidden (tests/lean/sitecustomize.py), as in `pip install artist-hotline`."
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    hidden = ','.join(m for modules in EXTRAS.values() for m in modules)
    return env | dict(PYTHONPATH=os.pathsep.join([str(ROOT / 'tests' / 'lean'), str(ROOT)]), HIDE_MODULES=hidden) | kw


def test_the_extras_are_hidden(tmp_path):
    r = subprocess.run([sys.executable, '-c', 'import importlib.util as u; print(u.find_spec("pandas"), u.find_spec("numpy") is not None); import pocketsphinx'],
                       env=lean_env(), cwd=tmp_path, capture_output=True, text=True)
    assert r.stdout.split() == ['None', 'True'] and "No module named 'pocketsphinx'" in r.stderr


@pytest.mark.parametrize('args, extra', [(['report', '--db', 'sqlite:///calls.sqlite3'], 'workbench'), (['calibrate', '.'], 'workbench'),
                                         (['demo', '--out', 'demo'], 'offline'), (['fake-cloud', '--port', '0'], 'offline'),
                                         (['simulate', 'http://127.0.0.1:9', '--say', 'hello'], 'offline')])
def test_a_command_that_needs_an_extra_names_it(tmp_path, args, extra):
    r = subprocess.run(CLI + args, env=lean_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith(f"comes with the {extra} extra: pip install 'artist-hotline[{extra}]'"), r.stderr


def test_serve_without_keys_needs_the_offline_extra(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    r = subprocess.run(CLI + ['serve'], env=lean_env(HOST='127.0.0.1', PORT=str(port), DATABASE_URL=f'sqlite:///{tmp_path}/c.sqlite3'), cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pip install 'artist-hotline[offline]'" in r.stderr, r.stderr


def test_serve_runs_the_cloud_path_without_the_extras(tmp_path):
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    keys = dict(OPENAI_API_KEY='sk-lean', ELEVENLABS_API_KEY='xi-lean', ELEVENLABS_VOICE_ID='lean-voice',
                OPENAI_BASE_URL='http://127.0.0.1:9/v1', ELEVENLABS_BASE_URL='http://127.0.0.1:9')  # nobody there: /health says so
    proc = subprocess.Popen(CLI + ['serve'], env=lean_env(HOST='127.0.0.1', PORT=str(port), DATABASE_URL=f'sqlite:///{tmp_path}/c.sqlite3', **keys),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        health = wait_health(port, proc)
        assert health['providers'] == {'stt': 'openai:gpt-4o-mini-transcribe', 'stream_stt': 'openai-realtime:gpt-realtime-whisper',
                                       'llm': 'openai:gpt-4o-mini', 'tts': 'elevenlabs:eleven_flash_v2_5', 'stream_tts': 'elevenlabs-ws:eleven_flash_v2_5',
                                       'moderation': 'openai:omni-moderation-latest'}
        assert health['problems'] and all('unreachable' in p for p in health['problems'])  # only the providers nobody runs here
    finally:
        proc.terminate(); proc.wait(30)


@pytest.mark.parametrize('env, loaded', [
    ({}, []),  # the offline default
    (dict(OPENAI_API_KEY='k', ELEVENLABS_API_KEY='k', ELEVENLABS_VOICE_ID='v'), []),  # the cloud path over plain aiohttp (the default client)
    (dict(OPENAI_API_KEY='k', ELEVENLABS_API_KEY='k', ELEVENLABS_VOICE_ID='v', PROVIDER_CLIENT='sdk'), ['openai', 'elevenlabs']),
    (dict(OPENAI_API_KEY='k', TTS_PROVIDER='openai', PROVIDER_CLIENT='sdk'), ['openai']),
    (dict(ELEVENLABS_API_KEY='k', ELEVENLABS_VOICE_ID='v', PROVIDER_CLIENT='sdk'), ['elevenlabs'])])
def test_an_sdk_is_imported_only_where_used(tmp_path, env, loaded):
    "Each SDK costs about a second to import: the engines a server builds load only the SDKs they speak through."
    code = ('import sys; from artist_hotline.settings import Settings; from artist_hotline.persona import load_persona; '
            'from artist_hotline.engines import make_providers; p = make_providers(Settings.from_env(env_file=None), load_persona()); '
            "print(' '.join(m for m in ('openai', 'elevenlabs') if any(k == m or k.startswith(m + '.') for k in sys.modules)))")
    clean = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    r = subprocess.run([sys.executable, '-c', code], env=clean | env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == loaded, r.stdout
