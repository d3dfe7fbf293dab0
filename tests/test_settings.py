"The settings tree: one name per variable, every bad value refused at start, and turn-taking calibrated in a folder then served."
import json, os, re, signal, socket, subprocess, sys, time, tomllib, urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import wait_health
from artist_hotline.audio import read_audio, write_wav
from artist_hotline.settings import ENV_NAMES, CallSettings, Settings, SettingsError, TurnSettings, read_turn_toml, turn_report, turn_toml
from artist_hotline.vad import frame_db

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).parent / 'artist-hotline')]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def clean_env(**kw) -> dict:
    "The process environment without any hotline setting, plus `kw`."
    return {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | kw


def test_env_example_lists_every_setting_with_its_default(tmp_path):
    "Every setting once, with its default; the turn-taking ones commented out, since a value set overrides TURN_CONFIG's."
    text = (ROOT / '.env.example').read_text()
    lines = [l for l in text.splitlines() if l and not l.startswith('#')]
    commented = re.findall(r'^#([A-Z][A-Z0-9_]*=.*)$', text, re.M)
    names = [l.split('=')[0] for l in lines + commented]
    assert sorted(names) == sorted(ENV_NAMES) and len(names) == len(set(names))
    assert {n for n, path in ENV_NAMES.items() if path[:2] == ('call', 'turn')} <= {l.split('=')[0] for l in commented}
    assert Settings.from_env({}, env_file=ROOT / '.env.example').model_dump() == Settings().model_dump()
    (tmp_path / 'uncommented.env').write_text('\n'.join(lines + commented))
    assert Settings.from_env({}, env_file=tmp_path / 'uncommented.env').model_dump() == Settings().model_dump()


@pytest.mark.parametrize('name, value, says', [
    ('VAD', 'silero', "'webrtc' or 'energy'"), ('TRUSTED_NETWORKS', 'garbage', 'is not a network'),
    ('PUBLIC_URL', 'example.com', 'https://'), ('TOKEN_TTL_S', '-1', 'greater than 0'),
    ('DATABASE_URL', 'notaurl', 'sqlite:///'), ('PORT', 'abc', 'valid integer'),
    ('HANGOVER_MS', '-5', 'greater than or equal to 20'), ('STT_PROVIDER', 'whisperx', "'auto', 'openai', 'whisper' or 'pocketsphinx'"),
    ('BLOCK_HOURS', '0', 'greater than 0'), ('BLOCK_REFRESH_S', '900', 'less than or equal to 300')])
def test_bad_value_stops_serve_naming_the_variable(tmp_path, name, value, says):
    t0 = time.monotonic()
    r = subprocess.run(CLI + ['serve'], env=clean_env(**{name: value}), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count('\n') == 1 and f'{name}={value!r}' in r.stderr and says in r.stderr, r.stderr
    assert time.monotonic() - t0 < 10 and not list(tmp_path.iterdir())  # refused before anything was opened or written


def test_streaming_settings():
    s = Settings.from_env({'STT_STREAMING': 'false', 'STT_STREAM_MODEL': 'gpt-4o-transcribe', 'STT_STREAM_DELAY': 'default', 'END_COMPLETE_MS': '250'}, env_file=None)
    assert (s.stt_streaming, s.stt_stream_model, s.stt_stream_delay, s.call.turn.words.complete_ms) == (False, 'gpt-4o-transcribe', 'default', 250)
    with pytest.raises(SettingsError) as e: Settings.from_env({'STT_STREAM_DELAY': 'soon', 'STT_FINAL_TIMEOUT_S': '0'}, env_file=None)
    assert [l.split('=')[0] for l in e.value.lines] == ['STT_STREAM_DELAY', 'STT_FINAL_TIMEOUT_S']


def test_every_bad_value_is_a_line():
    with pytest.raises(SettingsError) as e: Settings.from_env({'PORT': '0', 'VOICING': '2', 'MEDIA_MS': '30'}, env_file=None)
    assert [l.split('=')[0] for l in e.value.lines] == ['PORT', 'VOICING', 'MEDIA_MS']


def test_checks_across_settings():
    with pytest.raises(SettingsError, match='eager_ms .* must be shorter than hangover_ms'):
        Settings.from_env({'EAGER_MS': '300', 'HANGOVER_MS': '300'}, env_file=None)
    with pytest.raises(SettingsError, match='idle_hangup_s .* must be longer than idle_reprompt_s'):
        Settings.from_env({'IDLE_REPROMPT_S': '30'}, env_file=None)
    with pytest.raises(SettingsError, match='NOTIFY_SMS_TO needs'): Settings.from_env({'NOTIFY_SMS_TO': '+15550100'}, env_file=None)


def test_precedence_file_then_dotenv_then_environment_then_arguments(tmp_path):
    (tmp_path / 'turn.toml').write_text(turn_toml(TurnSettings(hangover_ms=300, min_speech_ms=80)))
    (tmp_path / '.env').write_text(f'TURN_CONFIG={tmp_path}/turn.toml\nMIN_SPEECH_MS=120\nPORT=9001\nHOST=\n')
    s = Settings.from_env({'PORT': '9002', 'IDLE_REPROMPT_S': '7.5'}, env_file=tmp_path / '.env', host='127.0.0.1')
    assert (s.call.turn.hangover_ms, s.call.turn.min_speech_ms, s.port, s.host, s.call.idle_reprompt_s) == (300, 120, 9002, '127.0.0.1', 7.5)
    turn, source = turn_report(s)
    from_file = {n: 'TURN_CONFIG' for n, p in ENV_NAMES.items() if p[:2] == ('call', 'turn')}
    assert turn == s.call.turn.model_dump() and source == {'file': f'{tmp_path}/turn.toml'} | from_file | {'MIN_SPEECH_MS': '.env', 'overridden': {'MIN_SPEECH_MS': {'turn.toml': 80, '.env': '120'}}}
    assert s._origin['PORT'] == 'environment' and s._origin['HOST'] == 'argument'


def test_a_bad_turn_file_names_the_file_and_key(tmp_path):
    (tmp_path / 'turn.toml').write_text('hangover_ms = 400\n[detector]\nkind = "silero"\n')
    with pytest.raises(SettingsError, match=r"TURN_CONFIG='.*turn.toml': \[detector.kind\] Input should be 'webrtc' or 'energy'"):
        Settings.from_env({'TURN_CONFIG': str(tmp_path / 'turn.toml')}, env_file=None)
    (tmp_path / 'typo.toml').write_text('hangovr_ms = 400\n')
    with pytest.raises(SettingsError, match=r'\[hangovr_ms\] Extra inputs are not permitted'): read_turn_toml(tmp_path / 'typo.toml')


def test_settings_are_frozen():
    with pytest.raises(Exception, match='frozen'): CallSettings().max_call_s = 1


def labelled_folder(folder: Path, # made here
                    pairs: bool = False, # also two pairs of lines, each said as one utterance with 600 ms of silence inside
                   ) -> Path:
    "A plain folder as a user would make it: the demo caller's recordings with Audacity labels, and a room without speech."
    folder.mkdir()
    said = {wav.stem: read_audio(wav) for wav in sorted((ROOT / 'recordings/caller').glob('*.wav'))}
    takes = {k: (k,) for k in said} | ({'02_then_04': ('02_artist', '04_advice'), '01_then_03': ('01_hello', '03_interrupt')} if pairs else {})
    for name, parts in takes.items():
        sr = said[parts[0]][1]
        pad, gap = np.zeros(sr, np.int16), np.zeros(int(0.6 * sr), np.int16)
        pcm = np.concatenate([pad, *[x for p in parts for x in (said[p][0], gap)][:-1], pad])
        voiced = np.flatnonzero(frame_db(pcm if sr == 8000 else pcm[::sr // 8000]) > -45)
        write_wav(folder / f'{name}.wav', pcm, sr)
        (folder / f'{name}.txt').write_text(f'{voiced[0] * 0.02:.3f}\t{(voiced[-1] + 1) * 0.02:.3f}\t{name}\n')
    room = (200 * np.random.default_rng(1).normal(size=6 * 16000)).astype(np.int16)
    write_wav(folder / 'quiet_room.wav', room, 16000)
    return folder


def test_calibrate_a_plain_folder_then_serve_what_it_chose(tmp_path):
    """`artist-hotline calibrate DIR --out OUT` writes turn.toml, its word waits tuned through the offline ear; `serve` with
    TURN_CONFIG runs with exactly that, as /health shows. The folder's callers pause 600 ms after a question and go on: where
    the shipped word waits cut them (on a quiet machine, both), calibrate chooses waits that cut none."""
    folder, out = labelled_folder(tmp_path / 'my_wavs', pairs=True), tmp_path / 'out'
    r = subprocess.run(CLI + ['calibrate', str(folder), '--out', str(out)], env=clean_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert 'noise:quiet_room' in r.stdout and 'chosen:' in r.stdout and f'TURN_CONFIG={out}/turn.toml' in r.stdout
    chosen = tomllib.loads((out / 'turn.toml').read_text())
    assert TurnSettings.model_validate(chosen)  # a complete, valid turn part of the settings tree
    for name in ('levels.png', 'frame_pr.png', 'tradeoff.png', 'calibration_grid.csv', 'calibration_summary.csv', 'recordings.csv',
                 'words_grid.csv', 'words_tradeoff.png'):
        assert (out / name).stat().st_size > 100, name
    words = pd.read_csv(out / 'words_grid.csv')
    c = words[words.chosen].iloc[0]
    assert c['cut-offs'] == 0 and c.utterances == 7 and words.loc[0, 'cut-offs'] >= c['cut-offs'], words
    shipped, waits = TurnSettings().words, (chosen['words']['complete_ms'], chosen['words']['stale_ms'])
    assert waits == (c['complete ms'], c['stale ms'])
    if words.loc[0, 'cut-offs']: assert (*waits, chosen['voice']['model']) != (shipped.complete_ms, shipped.stale_ms, TurnSettings().voice.model)  # the shipped waits (first row) cut a pause: both, on a quiet machine; Whisper's late words under load may spare them

    # the README's steps: .env copied from .env.example, TURN_CONFIG filled in, `serve` from that folder
    env_file = (ROOT / '.env.example').read_text().replace('\nTURN_CONFIG=\n', f'\nTURN_CONFIG={out}/turn.toml\n')
    (tmp_path / '.env').write_text(env_file)
    def serve(**more):
        port = free_port()
        proc = subprocess.Popen(CLI + ['serve'], env=clean_env(HOST='127.0.0.1', PORT=str(port), **more), cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            health = wait_health(port, proc)
        finally:
            proc.send_signal(signal.SIGINT)
            log = proc.communicate(timeout=30)[0].decode()
        assert proc.returncode == 0, log
        return health, log
    health, log = serve()
    assert health['turn'] == chosen and 'overrides' not in log
    assert health['turn_source'] == {'file': str(out / 'turn.toml')} | {n: 'TURN_CONFIG' for n, p in ENV_NAMES.items() if p[:2] == ('call', 'turn')}
    health, log = serve(HANGOVER_MS='990')  # a variable left over from before the calibration: it wins, and says so
    assert health['turn']['hangover_ms'] == 990 and health['turn_source']['overridden'] == {'HANGOVER_MS': {'turn.toml': chosen['hangover_ms'], 'environment': '990'}}
    assert f"HANGOVER_MS=990 from the environment overrides hangover_ms = {chosen['hangover_ms']} in {out}/turn.toml" in log


def test_calibrate_says_when_a_folder_has_no_recordings(tmp_path):
    r = subprocess.run(CLI + ['calibrate', str(tmp_path)], env=clean_env(), cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and 'no recordings found' in r.stderr and '.wav' in r.stderr


def test_version():
    r = subprocess.run(CLI + ['--version'], capture_output=True, text=True, timeout=60)
    import artist_hotline
    assert r.returncode == 0 and r.stdout.strip() == f'artist-hotline {artist_hotline.__version__}'


def test_calibrate_again_keeps_what_it_does_not_tune(tmp_path):
    "A second calibration rewrites the detector, voicing, hangover and minimum speech, and keeps hand-tuned word waits."
    import tomli_w
    from artist_hotline.calibrate import PROTOTYPE, TUNED, calibrate_report, setting
    folder, out = labelled_folder(tmp_path / 'my_wavs'), tmp_path / 'out'
    grid = [PROTOTYPE, setting(voicing=None), setting(), setting('energy')]
    first = calibrate_report(folder, out, grid=grid, progress=False, show=False)
    edited = tomllib.loads(first.files['turn.toml'].read_text())
    edited['words']['continues_ms'], edited['hangover_ms'] = 1234, 999
    first.files['turn.toml'].write_text(tomli_w.dumps(edited))
    again = calibrate_report(folder, out, grid=grid, progress=False, show=False)
    after = tomllib.loads(again.files['turn.toml'].read_text())
    assert after['words']['continues_ms'] == 1234 and after['hangover_ms'] == again.chosen.turn.hangover_ms != 999
    assert {k: after[k] for k in TUNED} == {k: v for k, v in again.chosen.turn.model_dump().items() if k in TUNED}
