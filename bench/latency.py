"""Voice-to-voice latency of the hotline against the original prototype's design, on real recorded speech.

Run from the repository root (about 2 minutes):

    .venv/bin/python bench/latency.py
    .venv/bin/python bench/latency.py --digits 10 --modes ours      # shorter
    .venv/bin/python bench/latency.py --modes ours --setting STT_STREAMING=false   # A/B a setting

Needs the real corpus at ../shared/corpus (or --corpus DIR). For each mode a hotline server, a fake
OpenAI + ElevenLabs (`typical` latency profile) and a simulated Twilio caller run in this process on
127.0.0.1. The caller speaks corpus recordings in real time (LibriVox sentences, "go forward ten
meters", spoken digits), waits for the reply (its playback is skipped, not its latency), and moves on.

- `ours`: the cloud adapters built by `make_providers` (plain HTTP as `serve` uses by default, or the
  SDK ones with `--client sdk`; OpenAI Realtime transcription streaming the caller's words; the reply
  spoken over ElevenLabs' multi-context WebSocket as it is written, ulaw_8000), default CallSettings
  (WebRTC VAD, the end of a turn judged by its words, the answer started in the pause).
- `ours-http`: the same, but speech over ElevenLabs' HTTP stream, a request per sentence
  (TTS_STREAMING=false): the path before the socket, and its fallback.
- `prototype`: the original design, same run: energy VAD at a fixed -35 dBFS, 2 s of silence ends a
  turn, the whole transcript, the whole model reply, the whole speech as MP3 decoded, resampled to
  8 kHz and µ-law encoded, then sent at once; through the SDK adapters, as the prototype used the SDKs.

Latency = the caller's last voiced sample (end of `simulate.voiced_span` of the recording, which
matches the LibriVox hand labels within 0.1 s) -> the first bot frame reaching the caller (and, also
reported, the first audible bot sample). Overhead = latency - the time to decide the turn was over
(endpoint hangover for a turn ended by silence, the measured decision for one ended by its streamed
words) - the profile's first-byte delays the caller waited for (stt_s, unless the answer started on
the streamed words, + first_token_s + first_audio_s). The fake cloud's speech-to-text returns the
known transcript of the recording being spoken instead of running pocketsphinx (streamed: each word
once the audio up to its end has arrived, word ends spread evenly over the voiced part, sent
realtime_delta_s later), and its eSpeak audio is synthesized once up front, so its CPU does not
distort the figures. The persona's greeting is
shortened (greetings are not measured). The calls of a mode run at the same time; the modes one
after the other. Prints the figures and writes bench/results/latency.json.
"""
from __future__ import annotations

import argparse, asyncio, dataclasses, io, json, logging, re, sys, tempfile, time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from aiohttp import web
from elevenlabs.client import AsyncElevenLabs

from artist_hotline.audio import FRAME_SAMPLES, SAMPLE_RATE, read_audio, resample, ulaw_decode, ulaw_encode
from artist_hotline.cloud import OpenAIChat, OpenAISTT
from artist_hotline.fakecloud import Engines, get_profile, running_fake_cloud
from artist_hotline.offline import ScriptedBrain, espeak_synth
from artist_hotline.persona import load_persona
from artist_hotline.providers import LanguageModel, Providers, SpeechToText, StreamingSpeechToText, TextToSpeech, TranscriptStream
from artist_hotline.sentences import SentenceSplitter, WordFeed, clean_for_speech
from artist_hotline.server import FINISHED, create_app
from artist_hotline.settings import CallSettings, DetectorSettings, Settings, TurnSettings, VoicingSettings
from artist_hotline.simulate import Hangup, dial, sim_result, voiced_span

ROOT = Path(__file__).resolve().parent.parent
DIGITS = 'zero one two three four five six seven eight nine'.split()
SPEAKERS = ('george', 'jackson', 'lucas')
PROTO_HANGOVER_MS, PROTO_THRESHOLD_DB = 2000, -35.0
SETTLE_S = 0.6 # a reply is over when nothing has played for this long
GREETING = "Hi, it's Synthetic Jason. What are you making?" # short, so calls start quickly (greetings are not measured)


# ---------------------------------------------------------------- corpus
@dataclass
class Clip:
    "One corpus recording the caller says."
    label: str
    text: str # what is said (the fake speech-to-text's answer)
    pcm: np.ndarray # int16, 8 kHz
    span: tuple[int, int] # voiced part, samples

def load_clip(path: Path, text: str) -> Clip:
    pcm, _ = read_audio(path, SAMPLE_RATE)
    return Clip(path.name, text, pcm, voiced_span(pcm) or (0, len(pcm)))

def corpus_calls(corpus: Path, n_digits: int, digits_per_call: int) -> list[list[Clip]]:
    "The scripts: one call of sentences, then calls of spoken digits."
    lv = sorted((corpus / 'librivox').glob('*.wav'))
    sentences = [load_clip(p, p.with_suffix('.txt').read_text().strip()) for p in lv]
    sentences.append(load_clip(corpus / 'misc' / 'goforward.raw', 'go forward ten meters'))
    names = [f'{d}_{SPEAKERS[(d + k) % 3]}_{k}' for k in (0, 1) for d in range(10)]
    names += [f'{d}_{SPEAKERS[(d + 2) % 3]}_{k}' for k in (0, 1) for d in range(10)]
    digits = [load_clip(corpus / 'fsdd' / f'{n}.wav', DIGITS[int(n[0])]) for n in names[:n_digits]]
    return [sentences] + [digits[i:i + digits_per_call] for i in range(0, len(digits), digits_per_call)]


# ---------------------------------------------------------------- engines
def _words(text: str) -> list[str]:
    "Text cut into the word-sized tokens the fake chat model streams."
    return re.findall(r'\s*\S+', text)

class KnownTranscriptSTT(SpeechToText, StreamingSpeechToText):
    """The fake cloud's speech-to-text: the transcript of the corpus recording the audio contains (found by its exact µ-law frames).
    Streamed, it says each word once the audio up to its end has arrived (word ends spread evenly over the clip's voiced part)."""
    name = 'known-transcript'
    def __init__(self, clips: list[Clip]):
        self.where, self.misses, self.calls = {}, 0, 0
        for c in clips:  # the caller sends each clip from a frame boundary; the server's utterance is cut on frame boundaries
            x = ulaw_decode(ulaw_encode(np.concatenate([c.pcm, np.zeros(-len(c.pcm) % FRAME_SAMPLES, np.int16)])))
            for k, f in enumerate(x.reshape(-1, FRAME_SAMPLES)):
                if np.abs(f).max() > 200: self.where[f.tobytes()] = (c, k)

    def lookup(self, pcm: np.ndarray) -> str | None:
        x = np.asarray(pcm, np.int16)[:len(pcm) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)
        return next((self.where[f.tobytes()][0].text for f in x if f.tobytes() in self.where), None)

    async def transcribe(self, pcm, sr=SAMPLE_RATE):
        self.calls += 1
        text = self.lookup(pcm) if sr == SAMPLE_RATE else None
        if text is None: self.misses += 1
        return text or ''

    async def open(self, on_words): return _KnownStream(self, on_words)

class _KnownStream(TranscriptStream):
    "One session's turns: the known words, each once its audio has arrived; the whole transcript at commit."
    revises = False
    def __init__(self, stt: KnownTranscriptSTT, on_words):
        super().__init__(on_words)
        self.stt, self.pcm, self.said = stt, [], ''

    def _push(self, ulaw):
        x = ulaw_decode(ulaw)
        self.pcm.append(x)
        hits = [self.stt.where.get(f.tobytes()) for f in x[:len(x) // FRAME_SAMPLES * FRAME_SAMPLES].reshape(-1, FRAME_SAMPLES)]
        if not (hits := [h for h in hits if h]): return
        clip, k = hits[-1]
        words, (a, b) = clip.text.split(), clip.span
        n = sum(a + (i + 1) / len(words) * (b - a) <= (k + 1) * FRAME_SAMPLES for i in range(len(words)))
        said = ' '.join(words[:n])
        if said != self.said:
            self.said = said
            self.on_words(said)

    def _commit(self):
        done = asyncio.get_running_loop().create_future()
        self.stt.calls += 1
        text = self.stt.lookup(np.concatenate(self.pcm)) if self.pcm else None
        if text is None: self.stt.misses += 1
        done.set_result(text or '')
        self.pcm, self.said = [], ''
        return done

    def _clear(self): self.pcm, self.said = [], ''

class CachedSynth:
    "eSpeak NG in the persona's voice, with every line the persona can say (and its sentence pieces) synthesized up front."
    def __init__(self, persona, rate: int | None = None, # resample the cached audio to this rate (None: eSpeak's own)
                ):
        self.voice, self.wpm, self.rate, self.cache = persona.voice.espeak_voice, persona.voice.espeak_rate, rate, {}
        lines = [persona.greeting, persona.reprompt, persona.goodbye, persona.busy, *persona.fallback_lines,
                 *persona.small_talk, *(r.reply for r in persona.script)]
        for line in filter(None, lines):
            split = SentenceSplitter()
            pieces = [p for tok in _words(line) for p in split.push(tok)] + split.flush()
            for text in {*pieces, clean_for_speech(line)}: self(text)

    def __call__(self, text: str) -> tuple[np.ndarray, int]:
        if text not in self.cache:
            pcm, sr = espeak_synth(text, self.voice, self.wpm)
            self.cache[text] = (resample(pcm, sr, self.rate), self.rate) if self.rate else (pcm, sr)
        return self.cache[text]

class WholeReply(LanguageModel):
    "The prototype's model call: wait for the whole reply, then hand it over in one piece."
    def __init__(self, inner: LanguageModel): self.inner, self.name = inner, f'whole:{inner.name}'
    async def reply(self, messages, usage=None):
        yield ''.join([piece async for piece in self.inner.reply(messages, usage)])
    async def aclose(self): await self.inner.aclose()

class Mp3ThenConvertTTS(TextToSpeech):
    "The prototype's speech: the whole reply as MP3 from ElevenLabs, decoded, resampled to 8 kHz, µ-law encoded, sent at once."
    name = 'elevenlabs-mp3-whole'
    def __init__(self, voice_id: str, api_key: str, base_url: str, model: str = 'eleven_flash_v2_5'):
        self.voice_id, self.model = voice_id, model
        self.client = AsyncElevenLabs(api_key=api_key, base_url=base_url)

    @staticmethod
    def convert(mp3: bytes) -> bytes:
        x, sr = sf.read(io.BytesIO(mp3), dtype='int16', always_2d=True)
        return ulaw_encode(resample(x[:, 0].copy(), sr, SAMPLE_RATE)).tobytes()

    async def speak(self, text):
        mp3 = b''.join([c async for c in self.client.text_to_speech.stream(
            voice_id=self.voice_id, text=text, model_id=self.model, output_format='mp3_44100_128')])
        yield await asyncio.get_running_loop().run_in_executor(None, self.convert, mp3)

def prototype_settings(**kw) -> Settings:
    "Server settings whose calls behave like the prototype's: a fixed RMS threshold, a 2 s silence timer, the whole reply at once."
    turn = TurnSettings(detector=DetectorSettings(kind='energy', energy_db=PROTO_THRESHOLD_DB), voicing=VoicingSettings(threshold=0),
                        hangover_ms=PROTO_HANGOVER_MS, min_speech_ms=20, eager_ms=0)
    return Settings(**kw, call=CallSettings(turn=turn, split_sentences=False, idle_reprompt_s=30, idle_hangup_s=60))


# ---------------------------------------------------------------- one mode
async def start_server(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, '127.0.0.1', 0)
    await site.start()
    return runner, f'http://127.0.0.1:{runner.addresses[0][1]}'

def ours_settings(overrides: dict | None = None, # settings by variable name, parsed and checked as `serve` does
                  **kw) -> Settings:
    "The server's own defaults (and any `--setting`), with a silent caller's reprompt and goodbye out of the way."
    env = {'IDLE_REPROMPT_S': '30', 'IDLE_HANGUP_S': '60', **{k.upper(): v for k, v in (overrides or {}).items()}}
    return Settings.from_env(env, env_file=None, **kw)

def build_app(mode: str, fc, persona, db: Path, client: str = 'http', overrides: dict | None = None) -> web.Application:
    kw = dict(host='127.0.0.1', openai_api_key='sk-bench', openai_base_url=fc.openai_base_url, elevenlabs_api_key='xi-bench',
              elevenlabs_base_url=fc.elevenlabs_base_url, elevenlabs_voice_id='bench-voice',
              database_url=f'sqlite:///{db}')  # the call store, as in production, in a scratch file
    if mode == 'ours': return create_app(ours_settings(overrides, **kw, provider_client=client), persona=persona)  # make_providers: the cloud adapters
    if mode == 'ours-http': return create_app(ours_settings({**(overrides or {}), 'TTS_STREAMING': 'false'}, **kw, provider_client=client), persona=persona)
    s = prototype_settings(**kw)
    providers = Providers(OpenAISTT(s.stt_model, api_key=s.openai_api_key, base_url=s.openai_base_url),
                          WholeReply(OpenAIChat(s.llm_model, api_key=s.openai_api_key, base_url=s.openai_base_url)),
                          Mp3ThenConvertTTS(s.elevenlabs_voice_id, s.elevenlabs_api_key, s.elevenlabs_base_url))
    return create_app(s, providers=providers, persona=persona)

async def run_call(url: str, app, clips: list[Clip], reply_timeout_s: float) -> list[dict]:
    "One call: listen to the greeting, say each clip in real time, wait for each reply; a row per clip."
    loop = asyncio.get_running_loop()
    stream = await dial(url, speed=0)  # speed 0: replies are not played out, the caller waits for the server in real time
    said, walls = [], []
    try:
        await stream.wait_reply(0, reply_timeout_s, SETTLE_S, 60)
        for i, c in enumerate(clips):
            wall = loop.time()  # the event loop's clock is time.monotonic(), the server's call clock too
            t = await stream.say(c.pcm, realtime=True)  # the caller talks in real time
            said.append((i, c.label, t + c.span[0], t + c.span[1], False)); walls.append(wall)
            await stream.wait_reply(t + c.span[1], reply_timeout_s, SETTLE_S, 60)
            await stream.fill(0.3)
        await stream.stop()
    except Hangup: pass
    finally: await stream.close()
    res = sim_result(stream, said)
    for _ in range(100):  # the server files the call once its socket handler has finished
        call = next((c for c in app[FINISHED] if c.sid == res.call_sid), None)
        if call is not None: break
        await asyncio.sleep(0.05)
    records = [r for r in call.turns if r.kind == 'reply'] if call else []
    rows = []
    for j, (turn, wall) in enumerate(zip(res.turns, walls)):
        stop = said[j][3]
        until = said[j + 1][3] if j + 1 < len(said) else np.inf
        first = next((a for a in res.audio[stream.playback.since(stop):] if a.received < until), None)
        row = dict(call=res.call_sid, label=turn.label, text=clips[j].text, voiced_s=(clips[j].span[1] - clips[j].span[0]) / SAMPLE_RATE,
                   latency_s=None if first is None else (first.start - stop) / SAMPLE_RATE,  # first bot frame at the caller
                   heard_s=turn.latency_s)  # first audible bot sample
        if call is not None:  # the server's record: the last reply turn whose speech started while this clip was being said
            t0, t1 = wall - call.clock.t0 - 0.05, walls[j + 1] - call.clock.t0 if j + 1 < len(walls) else np.inf
            mine = [r for r in records if r.speech_start is not None and t0 <= r.speech_start < t1]
            row['server_turns'] = len(mine)
            if mine:
                r = mine[-1]
                ref_end = wall + clips[j].span[1] / SAMPLE_RATE - call.clock.t0  # the reference end of speech, on the call's clock
                row.update(outcome=r.outcome, reply=r.reply_text, endpoint_lag=_d(ref_end, r.endpoint), end_reason=r.end_reason,
                           words_lag=_d(ref_end, r.transcript),  # when the answer started on the words it answers
                           streamed=r.stt.startswith('openai-realtime') and r.transcript is not None and r.transcript - r.endpoint < 0.05,  # not after a final
                           voice=r.tts.startswith('elevenlabs-ws'),  # spoken over the socket
                           **{f'at_{k}': _d(ref_end, getattr(r, k)) for k in AFTER_END},  # seconds after the reference end of speech
                           **{k: _d(r.speech_end, getattr(r, k)) for k in STAGES if k != 'vad_tail'})  # seconds after the VAD's speech end
        rows.append(row)
    return rows

def _d(a, b): return None if a is None or b is None else b - a

async def run_mode(mode: str, calls: list[list[Clip]], profile, persona, reply_timeout_s: float, client: str = 'http',
                   overrides: dict | None = None) -> tuple[list[dict], int]:
    "All the calls of one mode at once, against a fresh fake cloud and server; the rows and the transcripts not found."
    stt = KnownTranscriptSTT([c for clips in calls for c in clips])
    engines = Engines(stt, ScriptedBrain(persona), await asyncio.get_running_loop().run_in_executor(None, CachedSynth, persona))
    async with running_fake_cloud(profile, engines=engines) as fc:
        scratch = tempfile.TemporaryDirectory(prefix='latency-')
        app = build_app(mode, fc, persona, Path(scratch.name) / 'calls.sqlite3', client, overrides)
        runner, url = await start_server(app)
        try:
            t = time.monotonic()
            done = await asyncio.gather(*(run_call(url, app, clips, reply_timeout_s) for clips in calls))
            for k, got in enumerate(done):
                ok = [r['latency_s'] for r in got if r['latency_s'] is not None]
                print(f'  {mode:9s} call {k + 1}/{len(calls)}: {len(got)} turns, latency s ' + ' '.join(f'{x:.2f}' for x in ok) +
                      (f'  ({len(got) - len(ok)} without reply)' if len(ok) < len(got) else ''), flush=True)
            print(f'  {mode}: {len(calls)} calls at once took {time.monotonic() - t:.0f} s', flush=True)
        finally:
            await runner.cleanup()
            scratch.cleanup()
    return [r for got in done for r in got], stt.misses


# ---------------------------------------------------------------- figures
def first_piece_tokens(text: str, first_words: int | None = None) -> int:
    "How many streamed tokens the sentence splitter (or, given `first_words`, a streaming voice's first flush) needs before the first speech."
    split = SentenceSplitter() if first_words is None else WordFeed(first_words)
    toks = _words(text)
    for i, tok in enumerate(toks, 1):
        got = split.push(tok)
        if (got if first_words is None else any(f for _, f in got)): return i
    return len(toks)

def pct(xs, q): return float(np.percentile(xs, q)) if len(xs) else None

AFTER_END = dict(endpoint='end of turn decided', transcript='transcript the answer started on', first_token='first model token',
                 first_sentence='first text sent to speech (flush or piece)', first_audio='first speech audio', first_sent='first frame written to Twilio')

STAGES = dict(vad_tail="VAD tail: the detector's end of speech after the reference end", endpoint='turn ended (hangover)',
              transcript='transcript ready', first_token='first model token', first_sentence='first sentence ready',
              first_audio='first speech audio', first_sent='first frame written to Twilio')

def summarize(mode: str, rows: list[dict], misses: int, profile, settings: CallSettings) -> dict:
    "Percentiles of one mode, and where the time goes."
    hang, eager = settings.turn.hangover_ms / 1000, settings.turn.eager_ms / 1000
    first_bytes = profile.stt_s + profile.first_token_s + profile.first_audio_s
    after_words = profile.first_token_s + profile.first_audio_s  # a turn answered on its streamed words waits for no transcript
    ok = [r for r in rows if r['latency_s'] is not None]
    for r in ok:
        if r.get('streamed'):  # answered on its words (from when they came: at the end, or in a long pause): the decision, or the model and speech
            r['overhead_s'] = r['latency_s'] - max(r['endpoint_lag'], r['words_lag'] + after_words)
        else: r['overhead_s'] = r['latency_s'] - hang - first_bytes  # the brief's definition: as if every stage ran one after the other
        if r.get('endpoint_lag') is None or not r.get('reply'): continue
        # the model streams the first speakable piece at the profile's rate: not ours to speed up
        first = len(_words(r['reply'])) if not settings.split_sentences else first_piece_tokens(r['reply'], settings.tts_first_words if r.get('voice') else None)
        r['model_streaming_s'] = (first - 1) / profile.tokens_per_s
        if r.get('streamed'):
            r['vad_tail'] = 0.  # no tail: the decision itself is `endpoint_lag`
            r['floor_s'] = max(r['endpoint_lag'], r['words_lag'] + after_words + r['model_streaming_s'])
        else:
            r['vad_tail'] = r['endpoint_lag'] - hang  # the detector's own tail past the reference end of speech
            # the reply may not play before the turn has ended; an eager answer starts `eager` after the speech ended
            r['floor_s'] = max(hang, eager + first_bytes + r['model_streaming_s'])
        r['software_s'] = r['latency_s'] - r['vad_tail'] - r['floor_s']
    col = lambda k, rs=ok: [r[k] for r in rs if r.get(k) is not None]
    p = lambda k, rs=ok: dict(p50=pct(col(k, rs), 50), p90=pct(col(k, rs), 90), p95=pct(col(k, rs), 95))
    return dict(mode=mode, turns=len(rows), replied=len(ok), transcripts_not_found=misses, hangover_s=hang, eager_s=eager,
                split_sentences=settings.split_sentences, profile_first_bytes_s=first_bytes,
                latency=p('latency_s'), heard=p('heard_s'), overhead=p('overhead_s'), vad_tail=p('vad_tail'),
                model_streaming=p('model_streaming_s'), floor=p('floor_s'), software=p('software_s'),
                latency_sentences=p('latency_s', [r for r in ok if not r['label'][0].isdigit()]),
                latency_digits=p('latency_s', [r for r in ok if r['label'][0].isdigit()]),
                split_turns=sum(r.get('server_turns', 0) > 1 for r in rows), streamed_turns=sum(bool(r.get('streamed')) for r in rows),
                endpoint_lag=dict(p50=pct(col('endpoint_lag'), 50), p90=pct(col('endpoint_lag'), 90)),
                stages_p50={k: pct(col(k), 50) for k in STAGES}, after_end_p50={k: pct(col(f'at_{k}'), 50) for k in AFTER_END},
                voice_turns=sum(bool(r.get('voice')) for r in rows))

def ms(x): return '   n/a' if x is None else f'{x * 1000:6.0f}'

def report(summ: dict[str, dict], profile) -> dict:
    "Print the figures; the goals met."
    print(f'\nVoice-to-voice latency, fake cloud profile {profile.name!r} (stt {profile.stt_s:g} s, first token {profile.first_token_s:g} s '
          f'then {profile.tokens_per_s:g} tok/s, first audio {profile.first_audio_s:g} s then {profile.speed:g}x real time)')
    print('The fake cloud\'s speech-to-text returns the known transcript of each corpus recording (no pocketsphinx CPU); eSpeak audio is cached.')
    print("latency = caller's last voiced sample -> first bot frame at the caller; heard = -> first audible bot sample (ms)\n")
    print(f'{"mode":10s} {"turns":>5s} {"p50":>7s} {"p90":>7s} {"p95":>7s} {"heard50":>8s} {"heard95":>8s} {"sent.p50":>8s} {"digit.p50":>9s} {"hangover":>8s} {"over50":>7s} {"over95":>7s}')
    for m, s in summ.items():
        print(f'{m:10s} {s["replied"]:>2d}/{s["turns"]:<2d} {ms(s["latency"]["p50"])}  {ms(s["latency"]["p90"])}  {ms(s["latency"]["p95"])}  {ms(s["heard"]["p50"])}   '
              f'{ms(s["heard"]["p95"])}   {ms(s["latency_sentences"]["p50"])}    {ms(s["latency_digits"]["p50"])}   {ms(s["hangover_s"])}  '
              f'{ms(s["overhead"]["p50"])}  {ms(s["overhead"]["p95"])}')
        if s['transcripts_not_found'] or s['split_turns']:
            print(f'{"":10s} ({s["transcripts_not_found"]} uploads matched no recording, {s["split_turns"]} utterances split into several turns)')
    print('\nend of turn decided, after the end of speech (ms): ' + ', '.join(
        f'{m} p50 {ms(s["endpoint_lag"]["p50"]).strip()} p90 {ms(s["endpoint_lag"]["p90"]).strip()} '
        f'({s["streamed_turns"]} of {s["turns"]} turns answered on their streamed words)' for m, s in summ.items()))
    print("\nper-stage medians from the server's TurnRecords, ms after the VAD's end of speech (eager: answering starts "
          "during the pause, speaks once the turn has ended):")
    print(f'  {"":62s}' + ''.join(f'{m:>11s}' for m in summ))
    print(f'  {"settings: hangover / eager start":62s}' + ''.join(f'{ms(s["hangover_s"]):>6s}/{ms(s["eager_s"]).strip():<4s}' for s in summ.values()))
    for k, label in STAGES.items():
        print(f'  {label:62s}' + ''.join(f'{ms(s["stages_p50"][k]):>11s}' for s in summ.values()))
    print("\nthe reply path, stage by stage: medians in ms after the caller's reference end of speech (each turn's own times, so the "
          "steps need not add up exactly):")
    print(f'  {"":46s}' + ''.join(f'{m:>11s}' for m in summ))
    for k, label in AFTER_END.items():
        print(f'  {label:46s}' + ''.join(f'{ms(s["after_end_p50"][k]):>11s}' for s in summ.values()))
    print(f'  {"first bot frame at the caller (transport)":46s}' + ''.join(f'{ms(s["latency"]["p50"]):>11s}' for s in summ.values()))
    print(f'  {"turns spoken over the voice socket":46s}' + ''.join(f'{s["voice_turns"]:>11d}' for s in summ.values()))
    out = dict(summary=summ)
    if 'ours' in summ:
        o = summ['ours']
        print(f'\nour overhead as the brief defines it (latency - {o["hangover_s"] * 1000:.0f} ms hangover - {o["profile_first_bytes_s"] * 1000:.0f} ms '
              f"of the profile's first-byte delays; for a turn answered on its streamed words, latency - the later of the decision and the "
              f"words + {(profile.first_token_s + profile.first_audio_s) * 1000:.0f} ms): p50 {ms(o['overhead']['p50']).strip()} ms, p95 {ms(o['overhead']['p95']).strip()} ms")
        print(f"where the time goes, p50 (p95): the floor the design allows (max(hangover or the decision on the words, the answer's start + "
              f"first-byte delays + the model's streaming of the first speakable text at {profile.tokens_per_s:g} tok/s)) "
              f"{ms(o['floor']['p50']).strip()} ({ms(o['floor']['p95']).strip()}) ms,")
        print(f"  + the VAD's tail past the end of speech {ms(o['vad_tail']['p50']).strip()} ({ms(o['vad_tail']['p95']).strip()}) ms, "
              f"+ software (HTTP, SDKs, encoding, queues, sockets): the overhead beyond the profile's delays on the critical path "
              f"{ms(o['software']['p50']).strip()} ({ms(o['software']['p95']).strip()}) ms")
        goals = dict(voice_to_voice_p50_le_1050ms=o['latency']['p50'] is not None and o['latency']['p50'] <= 1.05,
                     voice_to_voice_p90_le_1250ms=o['latency']['p90'] is not None and o['latency']['p90'] <= 1.25,
                     critical_path_overhead_p50_le_50ms=o['software']['p50'] is not None and o['software']['p50'] <= 0.05)
        if 'ours-http' in summ:
            h = summ['ours-http']
            print(f"premature ends (utterances split into several turns): ours {o['split_turns']}, ours-http {h['split_turns']}")
            goals['no_more_premature_ends_than_http'] = o['split_turns'] <= h['split_turns']
        if 'prototype' in summ and o['latency']['p50']:
            p = summ['prototype']
            ratio = dict(p50=p['latency']['p50'] / o['latency']['p50'], p95=p['latency']['p95'] / o['latency']['p95'])
            print(f'prototype / ours: p50 {ratio["p50"]:.2f}x, p95 {ratio["p95"]:.2f}x')
            goals['at_least_3x_faster_p50'] = ratio['p50'] >= 3
            out['ratio'] = ratio
        print('goals: ' + ', '.join(f'{k} {"PASS" if v else "FAIL"}' for k, v in goals.items()))
        out['goals'] = goals
    return out


async def main(args) -> int:
    corpus = Path(args.corpus)
    if not (corpus / 'librivox').is_dir() or not (corpus / 'fsdd').is_dir():
        print(f'latency.py: the real corpus is not at {corpus.resolve()} (expected librivox/, fsdd/, misc/). '
              f'Run from the repository root next to ../shared/corpus, or pass --corpus DIR.', file=sys.stderr)
        return 2
    calls = corpus_calls(corpus, args.digits, args.digits_per_call)
    profile, persona = get_profile(args.profile), dataclasses.replace(load_persona(), greeting=GREETING)
    n = sum(map(len, calls))
    print(f'{n} turns of real speech in {len(calls)} calls per mode ({", ".join(str(len(c)) for c in calls)} turns); modes: {", ".join(args.modes)}')
    started, rows = time.monotonic(), {}
    overrides = dict(kv.split('=', 1) for kv in args.setting)
    for mode in args.modes:
        rows[mode] = await run_mode(mode, calls, profile, persona, args.reply_timeout, args.client, overrides)
    summ = {m: summarize(m, *r, profile, (prototype_settings() if m == 'prototype' else ours_settings(overrides)).call) for m, r in rows.items()}
    out = report(summ, profile)
    out.update(code=code_version(), settings=args.setting,
               profile=profile.__dict__, corpus=str(corpus), stt='known transcripts (fake cloud STT returns the text of the recording)',
               prototype=dict(vad='energy', threshold_db=PROTO_THRESHOLD_DB, voicing=None, hangover_ms=PROTO_HANGOVER_MS, min_speech_ms=20,
                              split_sentences=False, llm='whole reply', tts='mp3_44100_128 whole, decoded, resampled, µ-law'),
               turns={m: r[0] for m, r in rows.items()}, run_s=time.monotonic() - started)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    print(f'\nwrote {path} ({time.monotonic() - started:.0f} s)')
    return 0 if all(out.get('goals', {}).values()) else 1

def code_version() -> dict:
    "Which code was measured: package version, git commit and whether the work tree had changes."
    import subprocess, artist_hotline
    git = lambda *a: subprocess.run(['git', *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return dict(version=artist_hotline.__version__, commit=git('rev-parse', '--short', 'HEAD'), dirty=bool(git('status', '--porcelain', 'artist_hotline')))

def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--corpus', default=str(ROOT.parent / 'shared' / 'corpus'), help='the real corpus (default ../shared/corpus)')
    ap.add_argument('--profile', default='typical', help='fake cloud latency profile: instant, typical, slow')
    ap.add_argument('--digits', type=int, default=20, help='spoken digits to say (besides the 4 sentences), up to 40')
    ap.add_argument('--digits-per-call', type=int, default=5, help='digits per call')
    ap.add_argument('--modes', nargs='+', default=['ours', 'ours-http', 'prototype'], choices=['ours', 'ours-http', 'prototype'])
    ap.add_argument('--reply-timeout', type=float, default=20., help='longest wait for a reply to begin (s)')
    ap.add_argument('--client', default='http', choices=['http', 'sdk'], help="how `ours` sends cloud requests (PROVIDER_CLIENT)")
    ap.add_argument('--setting', action='append', default=[], metavar='NAME=VALUE',
                    help="a setting of `ours` by its variable name, e.g. STT_STREAMING=false (repeatable)")
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results' / 'latency.json'))
    return ap.parse_args(argv)

if __name__ == '__main__':
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger('artist_hotline.server').setLevel(logging.ERROR)  # not the 'no TWILIO_AUTH_TOKEN' warning: loopback only
    sys.exit(asyncio.run(main(parse_args())))
