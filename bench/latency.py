"""Voice-to-voice latency of a running hotline on real recorded speech, and where the time goes, with ears that hear.

Run from the repository root (about 3 minutes a mode; --quick about 1):

    .venv/bin/python bench/latency.py                          # offline: the default `serve` engines, no keys
    .venv/bin/python bench/latency.py --modes cloud oracle     # the cloud path (fake cloud, Whisper ear); the oracle
    .venv/bin/python bench/latency.py --modes prototype        # the original prototype's design, same fake cloud
    .venv/bin/python bench/latency.py --modes cloud --setting TTS_STREAMING=false   # A/B a server setting

Needs the real corpus at ../shared/corpus (or --corpus DIR). Each mode starts the hotline as a subprocess (and the
fake cloud as another, see blackbox.py): `offline` is `artist-hotline serve` with no keys (Whisper tiny.en streaming,
the scripted brain, Piper); `cloud` the cloud adapters against `artist-hotline fake-cloud --ear whisper` (`typical`
profile: 350 ms to a whole-file transcript, 200 ms from a commit to the streamed final, words 100 ms after their
audio, 400 ms to the first chat token, 250 ms to the first speech byte); `oracle` the same with the fake cloud's
`known` ear, told before each call what the caller will say: an upper bound, labelled so; `prototype` the original
design through the same fake cloud and Whisper ear: energy VAD at a fixed -35 dBFS, 2 s of silence ends a turn, the
whole transcript (an uploaded file), the whole model reply, the whole speech as MP3, decoded, resampled to 8 kHz and
µ-law encoded, then sent at once.

A simulated Twilio caller makes one call per recording, one at a time: it hears the greeting out, says the recording
in real time (the LibriVox sentences, JFK, "go forward ten meters" with their labelled ends, spoken digits ending
where their voiced part ends, each with 2.5 s of room tone or line noise after it) and waits for the reply (skipped through, not played out). Voice to voice
is the caller's last voiced sample (the label) to the first audible sample it hears (above simulate.SOUND_LEVEL in the
µ-law it receives) of audio that came after it; the first bot frame is reported too. Where the time goes comes from
the server's record of each turn (GET /calls/{sid}): each stage's time after the true end of speech, mapped onto the
call's clock (blackbox.py says how). Percentiles are nearest-rank; a turn with no reply counts as infinitely late,
never dropped. The goal (cloud only): voice to voice p50 <= 1.05 s and p90 <= 1.25 s; the exit status is 1 when it
is missed. Writes bench/results/latency-<mode>.json.
"""
from __future__ import annotations

import argparse, asyncio, collections, io, logging, sys, time
from pathlib import Path

import aiohttp
import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blackbox import LABELS, ROOT, Stack, call_case, corpus_ok, file_record, ms, pct, reason_kind, voiced_digits, write_result  # noqa: E402 (the sibling module)

from artist_hotline.audio import SAMPLE_RATE, resample, ulaw_encode
from artist_hotline.endpointing import Case, digit_cases, sentence_cases
from artist_hotline.providers import LanguageModel, TextToSpeech

GOALS = dict(v2v_p50=1.05, v2v_p90=1.25)
STAGES = dict(endpoint='end of turn decided', words_ready='words reached the turn-taker', transcript='words the answer started on',
              stt_final='final transcript', first_token='first model token', first_sentence='first text sent to speech',
              first_audio='first speech audio', first_sent='first frame written to Twilio')
PROTO_HANGOVER_MS, PROTO_THRESHOLD_DB = 2000, -35.0


def cases(corpus: Path, quick: bool) -> list[Case]:
    "The complete sentences, then spoken digits (two takes of each, or one with --quick, speakers in turn)."
    digits = digit_cases(corpus)
    return sentence_cases(corpus) + voiced_digits([digits[d * 6 + (d + k) % 6] for d in range(10) for k in ((0,) if quick else (0, 3))][:5 if quick else 20])


def judge(case: Case, h) -> dict:
    "One call's row: voice to voice, the first bot frame, and each stage of the turn holding the end of speech."
    stop = h.at + round(case.end * SAMPLE_RATE)
    firsts = [a for a in h.result.audio if a.received >= stop]
    turns = h.caller_turns()
    holding = [t for t in turns if t.get('speech_start') is not None and (h.case_s(t['speech_start']) or 0) < case.end]
    row = dict(case=case.name, group=case.group, sid=h.sid, greeted=h.greeted, clock_slack_s=h.clock_slack_s, turns=len(turns),
               v2v_s=h.first_sound_after(stop), first_frame_s=(firsts[0].start - stop) / SAMPLE_RATE if firsts else None)
    if h.t0 is None: row['problem'] = 'no bot audio: the call clock could not be mapped'
    if holding:
        t = holding[-1]
        row.update(end_reason=t.get('end_reason', ''), outcome=t.get('outcome'), heard=t.get('caller_text', ''), reply=t.get('reply_text', ''),
                   stt=t.get('stt'), llm=t.get('llm'), tts=t.get('tts'),
                   **{f'at_{k}': None if h.case_s(t.get(k)) is None else h.case_s(t[k]) - case.end for k in STAGES})
    return row


def summarize(rows: list[dict], mode: str) -> dict:
    p = lambda k, rs=rows: dict(p50=pct([r.get(k) for r in rs], 50), p90=pct([r.get(k) for r in rs], 90), p95=pct([r.get(k) for r in rs], 95))
    sent, dig = [r for r in rows if r['group'] == 'sentence'], [r for r in rows if r['group'] == 'digit']
    med = lambda k: (lambda x: float(np.median(x)) if x else None)([r[k] for r in rows if r.get(k) is not None])
    s = dict(turns=len(rows), replied=sum(r['v2v_s'] is not None for r in rows), v2v=p('v2v_s'), first_frame=p('first_frame_s'),
             v2v_sentences=p('v2v_s', sent), v2v_digits=p('v2v_s', dig),
             stages_after_end_p50={k: med(f'at_{k}') for k in STAGES},
             end_reasons=dict(collections.Counter(reason_kind(r.get('end_reason')) for r in rows).most_common()),
             split_turns=sum(r['turns'] > 1 for r in rows), unmapped_calls=sum('problem' in r for r in rows))
    goals = dict(voice_to_voice_p50_le_1050ms=s['v2v']['p50'] <= GOALS['v2v_p50'],
                 voice_to_voice_p90_le_1250ms=s['v2v']['p90'] <= GOALS['v2v_p90']) if mode == 'cloud' else {}
    return dict(summary=s, goals={k: bool(v) for k, v in goals.items()}, goals_apply=mode == 'cloud')


async def run_mode(mode: str, todo: list[Case], args) -> dict:
    extra = dict(kv.split('=', 1) for kv in args.setting)
    cmd = [sys.executable, str(Path(__file__).resolve()), '--role', 'prototype-server'] if mode == 'prototype' else None
    started = time.monotonic()
    async with Stack(mode, args.profile, extra, cmd) as stack, aiohttp.ClientSession() as http:
        print(f'\n{LABELS[mode]}: server {stack.health["providers"]}' + (f', fake cloud ear {stack.cloud["ear"]}' if stack.cloud_url else ''), flush=True)
        filed = []
        for i, case in enumerate(todo):  # one call at a time; the server files each call's record while the next one goes on
            if mode == 'oracle': await stack.register(http, case.pcm, words=case.words)
            h = await call_case(stack.url, http, case.pcm, case.end, args.reply_timeout)
            filed.append(asyncio.create_task(file_record(h, http, stack.url)))
            print(f'  {i + 1:2d}/{len(todo)} {case.group:8s} {case.name:12s} voice to voice '
                  f'{ms(h.first_sound_after(h.at + round(case.end * SAMPLE_RATE))):>5s} ms', flush=True)
        rows = [judge(case, h) for case, h in zip(todo, await asyncio.gather(*filed))]
        print('\nper recording, from the server\'s records: the turn over, ms after the end of speech, and why')
        for r in rows:
            print(f'  {r["group"]:8s} {r["case"]:12s} {ms(r.get("at_endpoint")):>5s}  {r.get("end_reason") or "(no turn)"}'
                  + (f'  [{r["problem"]}]' if 'problem' in r else ''))
        out = dict(settings=dict(server=stack.settings, args={k: v for k, v in vars(args).items() if k not in ('modes', 'role')}),
                   engines=stack.engines(), logs=str(stack.scratch))
    if mode == 'prototype':
        out['prototype'] = dict(vad='energy', threshold_db=PROTO_THRESHOLD_DB, voicing=None, hangover_ms=PROTO_HANGOVER_MS, streaming=False,
                                split_sentences=False, llm='whole reply', tts='mp3_44100_128 whole, decoded, resampled, µ-law')
    return dict(out, **summarize(rows, mode), cases=rows, run_s=time.monotonic() - started)


def report(results: dict[str, dict]) -> list[str]:
    print(f'\nvoice to voice (ms): the caller\'s last voiced sample -> the first audible sample it hears')
    print(f'{"":58s} {"turns":>6s} {"p50":>6s} {"p90":>6s} {"p95":>6s} {"sent.p50":>8s} {"digit.p50":>9s} {"frame.p50":>9s}')
    for m, r in results.items():
        s = r['summary']
        print(f'{LABELS[m][:58]:58s} {s["replied"]:>2d}/{s["turns"]:<3d} {ms(s["v2v"]["p50"]):>6s} {ms(s["v2v"]["p90"]):>6s} {ms(s["v2v"]["p95"]):>6s} '
              f'{ms(s["v2v_sentences"]["p50"]):>8s} {ms(s["v2v_digits"]["p50"]):>9s} {ms(s["first_frame"]["p50"]):>9s}')
    print('\nwhere the time goes: medians, ms after the true end of speech (each turn\'s own times, so steps need not add up)')
    print(f'  {"":34s}' + ''.join(f'{m:>11s}' for m in results))
    for k, label in STAGES.items():
        print(f'  {label:34s}' + ''.join(f'{ms(r["summary"]["stages_after_end_p50"][k]):>11s}' for r in results.values()))
    print(f'  {"first audible sample at the caller":34s}' + ''.join(f'{ms(r["summary"]["v2v"]["p50"]):>11s}' for r in results.values()))
    for m, r in results.items():
        print(f'\n{LABELS[m]}: end reasons: ' + '; '.join(f'{n} × {why}' for why, n in r['summary']['end_reasons'].items())
              + f'; utterances split into several turns: {r["summary"]["split_turns"]}')
    failed = []
    for m, r in results.items():
        if not r['goals_apply']: continue
        print(f'\ngoals, {LABELS[m]}: ' + ', '.join(f'{k} {"met" if ok else "MISSED"}' for k, ok in r['goals'].items()))
        failed += [f'{m}: {k}' for k, ok in r['goals'].items() if not ok]
    if failed: print('\nmissed: ' + '; '.join(failed))
    return failed


# ---------------------------------------------------------------- the prototype's server (a subprocess of this script)
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
        from elevenlabs.client import AsyncElevenLabs
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

def serve_prototype():
    "The hotline server with the prototype's turn-taking and engines, its settings from the environment (as `serve`)."
    from artist_hotline.cloud import OpenAIChat, OpenAISTT
    from artist_hotline.providers import Providers
    from artist_hotline.server import create_app, serve
    from artist_hotline.settings import DetectorSettings, Settings, TurnSettings, VoicingSettings
    base = Settings.from_env(env_file=None)
    turn = TurnSettings(detector=DetectorSettings(kind='energy', energy_db=PROTO_THRESHOLD_DB), voicing=VoicingSettings(threshold=0),
                        hangover_ms=PROTO_HANGOVER_MS, min_speech_ms=20, eager_ms=0)
    s = base.model_copy(update=dict(stt_streaming=False, tts_streaming=False, call=base.call.model_copy(update=dict(turn=turn, split_sentences=False))))
    providers = Providers(OpenAISTT(s.stt_model, api_key=s.openai_api_key, base_url=s.openai_base_url),
                          WholeReply(OpenAIChat(s.llm_model, api_key=s.openai_api_key, base_url=s.openai_base_url)),
                          Mp3ThenConvertTTS(s.elevenlabs_voice_id, s.elevenlabs_api_key, s.elevenlabs_base_url))
    serve(s, create_app(s, providers=providers))


async def main(args) -> int:
    corpus = Path(args.corpus)
    if not corpus_ok(corpus, 'latency.py'): return 2
    todo = cases(corpus, args.quick)
    print(f'{len(todo)} recordings a mode, one call each, one call at a time; modes: {", ".join(args.modes)}')
    results = {}
    for mode in args.modes:
        results[mode] = await run_mode(mode, todo, args)
        path = write_result('latency', mode, results[mode], Path(args.out))
        print(f'wrote {path} ({results[mode]["run_s"]:.0f} s)', flush=True)
    return 1 if report(results) else 0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--modes', nargs='+', default=['offline'], choices=['offline', 'cloud', 'oracle', 'prototype'])
    ap.add_argument('--quick', action='store_true', help='the five sentences and five digits (instead of twenty)')
    ap.add_argument('--corpus', default=str(ROOT.parent / 'shared' / 'corpus'), help='the real corpus (default ../shared/corpus)')
    ap.add_argument('--profile', default='typical', help="the fake cloud's latency profile (cloud, oracle, prototype)")
    ap.add_argument('--reply-timeout', type=float, default=10., help='longest wait for a reply after the end of speech (s); none by then is a failure')
    ap.add_argument('--setting', action='append', default=[], metavar='NAME=VALUE', help='a server setting by its variable name (repeatable)')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results'), help='folder of the JSON results')
    ap.add_argument('--role', default='bench', choices=['bench', 'prototype-server'], help=argparse.SUPPRESS)
    return ap.parse_args(argv)


if __name__ == '__main__':
    logging.basicConfig(level=logging.WARNING)
    a = parse_args()
    if a.role == 'prototype-server': serve_prototype()
    else: sys.exit(asyncio.run(main(a)))
