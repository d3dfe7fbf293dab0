"""What the black-box benches (`turns.py`, `latency.py`) share: the hotline as `artist-hotline serve` in a subprocess (and the
fake cloud as another, for the cloud modes), a simulated Twilio caller that says corpus recordings in real time, and the
server's own record of each call.

Modes. `offline`: the default `serve` engines with no keys (Whisper tiny.en streaming, the scripted brain, Piper).
`cloud`: the cloud adapters against `artist-hotline fake-cloud --ear whisper --profile typical` (Whisper tiny.en heard
live behind OpenAI's Realtime socket, the scripted brain behind chat completions, eSpeak behind ElevenLabs).
`oracle`: the same with the fake cloud's `known` ear, told before each call what the caller is about to say: every word
right, each as soon as its audio has come (plus the profile's delay), unpunctuated as endpointing's cases write them (it
does not know where the caller will stop). An upper bound on hearing, labelled so wherever it is printed.

Clocks. The server times a call on its call clock: seconds since its `Call` began (time.monotonic() in the server
process, just after Twilio's `start`). The caller notes time.monotonic() as it sends each 20 ms frame and as each bot
media message arrives. On Linux time.monotonic() is one clock for every process (CLOCK_MONOTONIC), so the two compare
once the call clock's origin t0 is known. t0 comes from the bot's audio: the server records when it wrote each turn's
first frame (`first_sent`, call clock) and the caller when that frame arrived, so t0 = the smallest (arrival -
first_sent) over the call's turns, but never before the caller sent `start` (the error is a few milliseconds: the
loopback's delivery, and the server noting `first_sent` just after its write; `Heard.clock_slack_s`, t0 after `start`,
was 0-7 ms in the committed runs). A sample the caller says happened when the frame holding it was sent, less the rest
of that frame: Twilio sends a frame once its 20 ms have been spoken.
"""
from __future__ import annotations

import asyncio, base64, dataclasses, json, os, re, signal, socket, subprocess, sys, tempfile, time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import numpy as np

from artist_hotline.audio import FRAME_SAMPLES, SAMPLE_RATE
from artist_hotline.settings import ENV_NAMES
from artist_hotline.vad import frame_db
from artist_hotline.simulate import SOUND_LEVEL, Hangup, SimResult, dial, sim_result, voiced_span

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'bench' / 'results'
TOKEN = 'bench-calls-token'  # CALLS_UI_TOKEN of the server: opens GET /calls/{sid}
SETTLE_S = 0.6  # a reply is over when nothing has played for this long
LABELS = {'offline': 'offline (Whisper tiny.en, scripted brain, Piper)',
          'cloud': 'cloud (fake cloud: Whisper ear, typical profile)',
          'oracle': 'oracle (upper bound): fake cloud, known transcripts, typical profile',
          'prototype': "prototype's design (fake cloud: Whisper ear, typical profile)"}
EARS = {'cloud': 'whisper', 'oracle': 'known', 'prototype': 'whisper'}  # the fake cloud's ear per mode (offline: no fake cloud)
BIN = Path(sys.executable).parent / 'artist-hotline'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def server_settings(mode: str, port: int, db: Path, cloud_url: str | None, extra: dict | None = None) -> dict:
    "The environment variables the server runs with: every mode's, the cloud's when it has one, and `extra` (`--setting`)."
    s = dict(HOST='127.0.0.1', PORT=port, DATABASE_URL=f'sqlite:///{db}', CALLS_UI_TOKEN=TOKEN, LOG_LEVEL='WARNING',
             IDLE_REPROMPT_S=120, IDLE_HANGUP_S=240)  # no "are you still there?" in a minute of speech-free noise
    if cloud_url:
        s.update(OPENAI_API_KEY='sk-bench', OPENAI_BASE_URL=cloud_url + '/v1', ELEVENLABS_API_KEY='xi-bench',
                 ELEVENLABS_BASE_URL=cloud_url, ELEVENLABS_VOICE_ID='bench-voice')
    return {k: str(v) for k, v in {**s, **(extra or {})}.items()}


def clean_env(settings: dict) -> dict:
    "This process's environment without any hotline setting it may hold, plus `settings`."
    return {**{k: v for k, v in os.environ.items() if k not in ENV_NAMES}, **settings}


class Stack:
    "One mode's processes: the fake cloud (cloud modes) and the hotline server, with their logs and call store in a scratch folder."
    def __init__(self, mode: str, profile: str = 'typical', extra: dict | None = None, server_cmd: list | None = None):
        self.mode, self.profile, self.extra, self.server_cmd = mode, profile, extra or {}, server_cmd
        self.scratch = Path(tempfile.mkdtemp(prefix=f'bench-{mode}-'))
        self.procs: dict[str, subprocess.Popen] = {}
        self.cloud_url = self.url = None
        self.settings: dict = {}

    def _spawn(self, name: str, cmd: list, env: dict) -> subprocess.Popen:
        log = open(self.scratch / f'{name}.log', 'w')
        # its own folder: no .env read, no files written into the checkout
        p = subprocess.Popen(cmd, env=env, cwd=self.scratch, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = p
        return p

    async def _wait(self, http: aiohttp.ClientSession, url: str, name: str, timeout: float = 120):
        t = time.monotonic()
        while time.monotonic() - t < timeout:
            if self.procs[name].poll() is not None:
                raise SystemExit(f'{name} exited ({self.procs[name].returncode}); its log: {self.scratch / f"{name}.log"}\n'
                                 + (self.scratch / f'{name}.log').read_text()[-2000:])
            try:
                async with http.get(url) as r:
                    if r.status == 200: return await r.json()
            except aiohttp.ClientError: pass
            await asyncio.sleep(0.3)
        raise SystemExit(f'{name} did not come up in {timeout:.0f} s; its log: {self.scratch / f"{name}.log"}')

    async def __aenter__(self) -> Stack:
        async with aiohttp.ClientSession() as http:
            if self.mode in EARS:
                port = free_port()
                self.cloud_url = f'http://127.0.0.1:{port}'
                self._spawn('cloud', [str(BIN), 'fake-cloud', '--port', str(port), '--profile', self.profile, '--ear', EARS[self.mode]],
                            clean_env({}))
                self.cloud = await self._wait(http, self.cloud_url + '/_control', 'cloud')
            port = free_port()
            self.url = f'http://127.0.0.1:{port}'
            self.settings = server_settings(self.mode, port, self.scratch / 'calls.sqlite3', self.cloud_url, self.extra)
            self._spawn('server', self.server_cmd or [str(BIN), 'serve'], clean_env(self.settings))
            self.health = await self._wait(http, self.url + '/health', 'server')
        return self

    async def __aexit__(self, *exc):
        for p in self.procs.values():
            if p.poll() is None: p.send_signal(signal.SIGINT)
        for p in self.procs.values():
            try: p.wait(20)
            except subprocess.TimeoutExpired: p.kill(); p.wait()

    def engines(self) -> dict:
        "What the server says it runs (/health), and the fake cloud's ear and profile."
        h = self.health
        out = dict(providers=h.get('providers'), models=h.get('models'), turn=h.get('turn'), turn_source=h.get('turn_source'),
                   version=h.get('version'), event_loop=h.get('event_loop'))
        if self.cloud_url: out['fake_cloud'] = dict(ear=self.cloud.get('ear'), profile=self.cloud.get('profile'))
        return out

    async def register(self, http: aiohttp.ClientSession, pcm: np.ndarray, words: list | None = None, text: str = ''):
        "Tell the oracle what the caller is about to say (the known ear only)."
        body = {'pcm': base64.b64encode(np.asarray(pcm, '<i2').tobytes()).decode(), 'words': words, 'text': text}
        if words is None: del body['words']
        async with http.post(self.cloud_url + '/_control/known', json=body) as r: r.raise_for_status()


@dataclass
class Heard:
    "One call as the caller made and heard it, and the server's record of it."
    sid: str
    start_sent: float # time.monotonic() the `start` message was sent
    frames: list # time.monotonic() each caller frame was sent, by stream frame
    media: list # time.monotonic() each bot media message arrived, in the order of `result.audio`
    at: int # stream sample where the case began
    result: SimResult | None = None
    record: dict | None = None # GET /calls/{sid}
    t0: float | None = None # the call clock's origin, on this process's clock
    greeted: bool = True # the greeting was heard before the case began

    def mono(self, sample: int) -> float:
        "When the caller said stream sample `sample`: its frame's sending, less the part of the frame after it."
        k = min(sample // FRAME_SAMPLES, len(self.frames) - 1)
        return self.frames[k] - ((k + 1) * FRAME_SAMPLES - sample) / SAMPLE_RATE

    def case_s(self, call_t: float | None) -> float | None:
        "A time on the call's clock as seconds into the case (the case's first sample at 0)."
        if call_t is None or self.t0 is None: return None
        return call_t + self.t0 - self.mono(self.at)

    @property
    def clock_slack_s(self) -> float | None: return None if self.t0 is None else self.t0 - self.start_sent

    def caller_turns(self) -> list[dict]:
        "The server's records of the caller's turns (not its greeting or reprompts), in order."
        return [t for t in (self.record or {}).get('turns', []) if t.get('kind') == 'reply']

    def audible(self, a: int, b: int | None = None) -> bool:
        "Did the caller hear bot audio (above `SOUND_LEVEL`) between stream samples a and b?"
        x = self.result.bot[a:b]
        return bool(len(x) and np.abs(x.astype(np.int32)).max() > SOUND_LEVEL)

    def first_sound_after(self, sample: int) -> float | None:
        "Seconds from stream sample `sample` to the first audible bot sample of audio that arrived after it."
        t = _first_sound(self.result, sample)
        return None if t is None else (t - sample) / SAMPLE_RATE


def _first_sound(res: SimResult, since: int) -> int | None:
    for a in res.audio:
        if a.received < since: continue
        x = a.pcm[:a.kept]
        i = np.flatnonzero(np.abs(x.astype(np.int32)) > SOUND_LEVEL)
        if len(i): return a.start + int(i[0])
    return None


def call_origin(h: Heard) -> float | None:
    "The call clock's origin on this process's clock: the smallest (arrival - first_sent) of its turns' first bot frames, not before `start`."
    turns = [t for t in (h.record or {}).get('turns', []) if t.get('first_sent') is not None]
    if not turns or not h.media: return None
    greeting = min(turns, key=lambda t: t['first_sent'])
    guess, best = h.media[0] - greeting['first_sent'], []
    for t in turns:
        later = [m for m in h.media if m >= guess + t['first_sent'] - 0.05]  # the first message of this turn's audio
        if later: best.append(later[0] - t['first_sent'])
    return max(min(best), h.start_sent) if best else guess


async def fetch_record(http: aiohttp.ClientSession, url: str, sid: str, timeout: float = 30) -> dict | None:
    "The server's record of a finished call (GET /calls/{sid}), once it is filed."
    t, call = time.monotonic(), None
    while time.monotonic() - t < timeout:
        async with http.get(f'{url}/calls/{sid}', headers={'Authorization': f'Bearer {TOKEN}'}) as r:
            if r.status == 200 and (call := await r.json()).get('ended_at'): return call
        await asyncio.sleep(0.2)
    return call


async def hear_greeting(stream, http: aiohttp.ClientSession, url: str, timeout: float = 30) -> bool:
    "Listen until the server has filed its greeting, which it does once all of it has played (False if it never does)."
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        await stream.fill(0.2, waiting=True)  # real time, but for bot audio being played (skipped through)
        async with http.get(f'{url}/calls/{stream.call_sid}', headers={'Authorization': f'Bearer {TOKEN}'}) as r:
            if r.status == 200 and any(x.get('kind') == 'greeting' for x in (await r.json()).get('turns', [])): return True
    return False


async def call_case(url: str, http: aiohttp.ClientSession, pcm: np.ndarray, end_s: float | None, reply_timeout_s: float = 8.,
                    after_s: float = 1.5) -> Heard:
    """One call: hear the greeting out, say `pcm` in real time, then wait for the reply to the speech that ends `end_s` into it
    (up to `reply_timeout_s` after that end), or, with no speech (`end_s` None), listen `after_s` more for a reply to nothing.
    The server's record comes later (`file_record`)."""
    stream = await dial(url, speed=0, start=False)  # speed 0: the bot's replies are skipped through, the caller's speech is real time
    frames, media, start_sent = [], [], [0.]
    send, on_text = stream._send, stream._on_text
    async def timed_send(msg):
        if msg.get('event') == 'media': frames.append(time.monotonic())
        elif msg.get('event') == 'start': start_sent[0] = time.monotonic()
        await send(msg)
    async def timed_text(data):
        t, n = time.monotonic(), len(stream.playback.audio)
        await on_text(data)
        if len(stream.playback.audio) > n: media.append(t)
    stream._send, stream._on_text = timed_send, timed_text  # this bench's notes of when each frame went and came
    h = Heard(stream.call_sid, 0., frames, media, 0)
    said = []
    try:
        await stream.send_connected(); await stream.send_start()
        h.start_sent = start_sent[0]
        h.greeted = await hear_greeting(stream, http, url)
        await stream.fill(0.3, waiting=True)
        h.at = stream.now
        await stream.say(pcm, realtime=True)
        if end_s is not None:
            stop = h.at + round(end_s * SAMPLE_RATE)
            said.append((0, 'case', h.at, stop, False))
            await stream.wait_reply(stop, reply_timeout_s, SETTLE_S, 60)
        else: await stream.fill(after_s, waiting=True)
        await stream.stop()
    except Hangup: pass
    finally: await stream.close()
    h.result = sim_result(stream, said)
    return h


async def file_record(h: Heard, http: aiohttp.ClientSession, url: str) -> Heard:
    "Read the server's record of the call once it has filed it (after a call it still writes a summary), and map its clock."
    h.record = await fetch_record(http, url, h.sid)
    h.t0 = call_origin(h)
    return h


def word_span(d: np.ndarray) -> tuple[int, int]:
    """The spoken word in a recording of one: `voiced_span` up to 200 ms past the end of its last stretch of 60 ms or more
    within 30 dB of its loudest frame (so a click or breath long after the word is not the word, and a final consonant is)."""
    db = frame_db(d)
    loud = np.flatnonzero(np.diff(np.r_[0, (db >= db.max() - 30).astype(int), 0]))
    runs = [(a, b) for a, b in zip(loud[::2], loud[1::2]) if b - a >= 3] or [(0, len(db))]
    d = d[:runs[-1][1] * FRAME_SAMPLES + SAMPLE_RATE // 5]
    return voiced_span(d) or (0, len(d))


def voiced_digits(cases: list) -> list:
    "Lone digits (`endpointing.digit_cases`) ending where the word ends: FSDD's files keep up to 0.7 s of silence (or a click) after it."
    out = []
    for c in cases:
        if c.group == 'digit':
            d = c.pcm[SAMPLE_RATE:round(c.end * SAMPLE_RATE)]  # the file, after a second of line noise
            a, b = word_span(d)
            c = dataclasses.replace(c, words=[(c.words[0][0], 1 + a / SAMPLE_RATE, 1 + b / SAMPLE_RATE)], end=1 + b / SAMPLE_RATE)
        out.append(c)
    return out


def pct(xs, q: float) -> float | None:
    "Nearest-rank percentile; a failure counts as infinitely late (None in, inf out), so it is never dropped."
    x = [np.inf if v is None else v for v in xs]
    return float(np.percentile(x, q, method='inverted_cdf')) if x else None


def reason_kind(why: str) -> str:
    "An end reason with its numbers and quoted words taken out, so reasons can be counted."
    return re.sub(r'\s+', ' ', re.sub(r'"[^"]*"', '"…"', re.sub(r'\d+', 'N', why or ''))).strip() or '(none)'


def code_version() -> dict:
    "Which code was measured: the commit, and whether the package or the benches had changes not committed."
    git = lambda *a: subprocess.run(['git', *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    import artist_hotline
    return dict(commit=git('rev-parse', 'HEAD'), branch=git('rev-parse', '--abbrev-ref', 'HEAD'), version=artist_hotline.__version__,
                dirty=bool(git('status', '--porcelain', 'artist_hotline', 'bench/blackbox.py', 'bench/turns.py', 'bench/latency.py')))


def write_result(bench: str, mode: str, out: dict, folder: Path = RESULTS) -> Path:
    "bench/results/<bench>-<mode>.json, with the code version, the date and the machine's load."
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'{bench}-{mode}.json'
    out = dict(bench=bench, mode=mode, label=LABELS[mode], date=datetime.now(timezone.utc).isoformat(timespec='seconds'),
               code=code_version(), load_avg=os.getloadavg(), cores=os.cpu_count(), **out)
    path.write_text(json.dumps(out, indent=1, default=_plain) + '\n')
    return path


def _plain(x):
    if isinstance(x, (np.integer,)): return int(x)
    if isinstance(x, (np.floating,)): return float(x)
    if isinstance(x, np.ndarray): return x.tolist()
    raise TypeError(type(x))


def ms(x) -> str:
    "Seconds as whole milliseconds for a table ('n/a' for none, 'never' for a failure)."
    return 'n/a' if x is None else 'never' if np.isinf(x) else f'{x * 1000:.0f}'


def corpus_ok(corpus: Path, script: str) -> bool:
    if (corpus / 'librivox').is_dir() and (corpus / 'fsdd').is_dir(): return True
    print(f'{script}: the real corpus is not at {corpus.resolve()} (expected librivox/, fsdd/, misc/, noise/, ami/). '
          'Run from the repository root next to ../shared/corpus, or pass --corpus DIR.', file=sys.stderr)
    return False
