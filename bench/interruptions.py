"""Talking over the bot, measured through a running hotline: do backchannels and noise let it go on, and do real
interruptions stop it at once?

Run from the repository root (about 4 minutes a mode):

    .venv/bin/python bench/interruptions.py                      # offline: the default `serve` engines, no keys
    .venv/bin/python bench/interruptions.py --modes cloud        # the cloud path: fake cloud with the Whisper ear
    .venv/bin/python bench/interruptions.py --modes offline before --before 104f528   # and the server as it was then

Needs the real corpus at ../shared/corpus (or --corpus DIR). Each mode starts `artist-hotline serve` (and the fake
cloud, see blackbox.py). A simulated Twilio caller (`artist_hotline.simulate`, real time, the bot's audio played as
Twilio plays it, `clear` included) says a LibriVox sentence, waits for the reply, and 0.3 s after it first hears the
bot says one case over it:
- backchannels: the AMI meetings' short turns that Whisper (read offline, whole) hears as an acknowledgement
  ("Okay.", "Yeah.", "Thank you.", a laugh); real meeting audio, other speakers' voices under some of them;
- noise: the loudest 0.5 s of each 10 s of the dish-washing and exercise-bike recordings (clatter, thumps);
- interruptions: whole sentences (the other LibriVox sentences, "go forward ten meters", JFK's first 4 s).
The corpus has no cough, door or keyboard: the noise cases stand in for them.

Figures, from what the caller heard (the `clear`s and the audio that played) and the server's record of the call
(`GET /calls/{sid}`: its `backchannel` and `barge_in` events, its turns):
- backchannels and noise: the bot went on (no `clear`, no reply audio dropped), and the server did not answer them;
- interruptions: the bot's audio stopped (the `clear` arrived) how long after the caller's first voiced sample, and
  the interruption was answered.
Over the bot means the reply was under way when the caller began: between its first audible sample and its last, a
pause between its sentences included (`audio_playing` says whether audio was playing at that very instant). A case
said after the reply had already ended is not over the bot: counted, and not judged. The goals: 0 backchannels
or noises stop the bot; every interruption stops it within 0.6 s. Exit 1 when one is missed. Writes
bench/results/interruptions-<mode>.json.
"""
from __future__ import annotations

import argparse, asyncio, logging, subprocess, sys, time
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blackbox import LABELS, ROOT, Stack, corpus_ok, fetch_record, ms, pct, write_result  # noqa: E402 (the sibling module)

from artist_hotline.audio import SAMPLE_RATE
from artist_hotline.endpointing import phone_signal, sentence_cases
from artist_hotline.simulate import Step, simulate_call
from artist_hotline.turns import backchannel

LABELS['before'] = 'the server at an earlier commit (--before), offline engines'
STOP_WITHIN_S = 0.6  # an interruption stops the bot this soon after the caller starts
OVER_AFTER_S = 0.3  # the case starts this long after the caller first hears the reply (the offline brain's replies are short)


def backchannel_cases(corpus: Path) -> list[tuple[str, np.ndarray, str]]:
    "(name, phone audio, what Whisper heard) of the AMI turns of at most 1.2 s that Whisper hears as an acknowledgement."
    from artist_hotline.neural import WhisperSTT
    ear, out = WhisperSTT().load(), []
    for wav, rttm in (('tst00', 'debug.test.rttm'), ('dev00', 'debug.development.rttm')):
        pcm = phone_signal(corpus / 'ami' / f'{wav}.wav')
        for row in map(str.split, (corpus / 'ami' / rttm).read_text().splitlines()):  # each speaker's own turns
            if len(row) < 5 or row[1] != wav or float(row[4]) > 1.2: continue
            s, e = float(row[3]), float(row[3]) + float(row[4])
            x = pcm[max(0, int((s - 0.05) * SAMPLE_RATE)):int((e + 0.05) * SAMPLE_RATE)]
            if backchannel(text := ear.read(x)): out.append((f'{wav} {s:.1f} s "{text[:20]}"', x, text))
    return out


def noise_bursts(corpus: Path, each_s: float = 10., burst_s: float = 0.5, n: int = 3) -> list[tuple[str, np.ndarray, str]]:
    "The loudest `burst_s` of each of the first `n` stretches of `each_s` of each noise recording."
    out = []
    for p in sorted((corpus / 'noise').glob('*.wav')):
        pcm, k = phone_signal(p), int(burst_s * SAMPLE_RATE)
        for i in range(n):
            part = pcm[int(i * each_s * SAMPLE_RATE):int((i + 1) * each_s * SAMPLE_RATE)].astype(np.float64)
            energy = np.convolve(part ** 2, np.ones(k), 'valid')[::80]
            j = int(np.argmax(energy)) * 80
            out.append((f'{p.stem} {i * each_s + j / SAMPLE_RATE:.1f} s', pcm[int(i * each_s * SAMPLE_RATE) + j:][:k], ''))
    return out


def cases(corpus: Path) -> tuple[np.ndarray, list[dict]]:
    "What the caller says first (a LibriVox sentence), and the cases said over the reply."
    sentences = sentence_cases(corpus, tail_s=0.3)
    first = sentences[1].pcm  # "he was not an ill disposed young man"
    said = [dict(group='backchannel', name=n, pcm=x, heard_offline=t) for n, x, t in backchannel_cases(corpus)]
    said += [dict(group='noise', name=n, pcm=x) for n, x, _ in noise_bursts(corpus)]
    said += [dict(group='interruption', name=c.name, pcm=c.pcm[:int(min(c.end + 0.3, 4.) * SAMPLE_RATE)])
             for i, c in enumerate(sentences) if i != 1]
    return first, said


def judge(case: dict, sim, record: dict | None) -> dict:
    "One case's row: was it said over the bot, did the bot stop (and how soon), what the server decided and why."
    first, t = sim.turns
    events = [(e.get('kind'), e.get('detail') or {}) for e in (record or {}).get('events', [])]
    replies = [x for x in (record or {}).get('turns', []) if x.get('kind') == 'reply']
    # over the bot: its reply was under way when the caller began (a pause between its sentences included)
    over = first.bot_start_s is not None and first.bot_start_s <= t.caller_start_s < (first.bot_end_s or 0)
    clears = [c for c in sim.clears if c >= first.bot_start_s] if over else []  # the caller's onset may precede its first voiced sample
    stop_after = clears[0] - t.caller_start_s if clears else None
    return dict(group=case['group'], case=case['name'], over_bot=over, audio_playing=t.barge_in, sid=sim.call_sid,
               caller_start_s=t.caller_start_s, caller_stop_s=t.caller_stop_s,
               stopped=stop_after is not None, stop_after_s=stop_after, first_reply_dropped_s=first.bot_dropped_s,
               answered=t.bot_start_s is not None, replies=len(replies),
               decisions=[dict(kind=k, **{a: d.get(a) for a in ('why', 'words', 'ms') if d.get(a) is not None})
                          for k, d in events if k in ('backchannel', 'barge_in', 'gave_way')],
               heard_offline=case.get('heard_offline'), window=envelopes(sim, t.caller_start_s - 1.))


def envelopes(sim, start_s: float, seconds: float = 4., frame_s: float = 0.02) -> dict:
    "The caller's line and what the caller heard from `start_s` on, as peak levels (0-1) per 20 ms, to plot."
    a, n, k = max(0, int(start_s * SAMPLE_RATE)), int(seconds / frame_s), int(frame_s * SAMPLE_RATE)
    def env(x):
        x = np.abs(x[a:a + n * k].astype(np.float64)) / 32768
        x = np.r_[x, np.zeros(n * k - len(x))]
        return np.round(x.reshape(n, k).max(1), 3).tolist()
    return dict(start_s=a / SAMPLE_RATE, frame_s=frame_s, caller=env(sim.caller), bot=env(sim.bot), clears_s=[c for c in sim.clears if c >= start_s])


def summarize(rows: list[dict]) -> dict:
    "A mode's figures and its goals."
    g = lambda grp: [r for r in rows if r['group'] == grp and r['over_bot']]
    s = {grp: dict(cases=sum(r['group'] == grp for r in rows), over_bot=len(g(grp)), stopped=sum(r['stopped'] for r in g(grp)),
                   reply_cut_s=sum(r['first_reply_dropped_s'] for r in g(grp)))
         for grp in ('backchannel', 'noise', 'interruption')}
    ints = g('interruption')
    s['interruption'].update(stop_after_p50=pct([r['stop_after_s'] for r in ints], 50),
                             stop_after_max=None if not ints or any(r['stop_after_s'] is None for r in ints) else max(r['stop_after_s'] for r in ints),
                             answered=sum(r['answered'] for r in ints))
    goals = dict(no_backchannel_stops_the_bot=s['backchannel']['stopped'] == 0 and s['backchannel']['over_bot'] > 0,
                 no_noise_stops_the_bot=s['noise']['stopped'] == 0 and s['noise']['over_bot'] > 0,
                 every_interruption_stops_it_within_600ms=bool(ints) and s['interruption']['stop_after_max'] is not None
                 and s['interruption']['stop_after_max'] <= STOP_WITHIN_S,
                 every_interruption_answered=bool(ints) and s['interruption']['answered'] == len(ints))
    return dict(summary=s, goals=goals)


def worktree(commit: str) -> Path:
    "A checkout of `commit` beside this one's temp files, for the `before` mode's server."
    path = Path('/tmp') / f'hotline-{commit[:10]}'
    if not path.exists(): subprocess.run(['git', '-C', str(ROOT), 'worktree', 'add', '--detach', str(path), commit], check=True, capture_output=True)
    return path


async def run_mode(mode: str, first: np.ndarray, todo: list[dict], args) -> dict:
    "Every case against one mode's processes, one call at a time."
    extra, cmd = dict(kv.split('=', 1) for kv in args.setting), None
    if mode == 'before':  # the same engines, the code as it was at that commit
        extra['PYTHONPATH'] = str(worktree(args.before))
        cmd = [sys.executable, '-c', 'import sys; from artist_hotline.cli import main; sys.argv[0] = "artist-hotline"; main()', 'serve']
    started, rows = time.monotonic(), []
    async with Stack('offline' if mode == 'before' else mode, args.profile, extra, cmd) as stack, aiohttp.ClientSession() as http:
        print(f'\n{mode}: server {stack.health["providers"]}', flush=True)
        for i, case in enumerate(todo):
            script = [Step(pcm=first, label='first'), Step(pcm=case['pcm'], barge_in_after_s=OVER_AFTER_S, label=case['name'], pause_s=0.5)]
            sim = await simulate_call(stack.url, script, speed=1.0, reply_timeout_s=args.reply_timeout)
            r = judge(case, sim, await fetch_record(http, stack.url, sim.call_sid))
            rows.append(r)
            print(f'  {i + 1:2d}/{len(todo)} {r["group"]:12s} {r["case"][:34]:34s} over the bot {r["over_bot"]!s:5s} '
                  f'stopped {r["stopped"]!s:5s} {ms(r["stop_after_s"]) + " ms" if r["stopped"] else "":8s} '
                  + '; '.join(f'{d["kind"]}: {d.get("why") or d.get("words", "")}' for d in r['decisions']), flush=True)
        out = dict(settings=dict(server=stack.settings, args={k: v for k, v in vars(args).items() if k != 'modes'}), engines=stack.engines(),
                   logs=str(stack.scratch))
    return dict(out, **summarize(rows), goals_apply=mode != 'before', cases=rows, run_s=time.monotonic() - started)


def report(results: dict[str, dict]) -> list[str]:
    "The figures side by side, a column per mode, and the goals."
    print(f'\n{"":44s}' + ''.join(f'{m:>22s}' for m in results))
    S = {m: r['summary'] for m, r in results.items()}
    lines = [('backchannels over the bot that stopped it', lambda s: f'{s["backchannel"]["stopped"]}/{s["backchannel"]["over_bot"]}'),
             ('noises over the bot that stopped it', lambda s: f'{s["noise"]["stopped"]}/{s["noise"]["over_bot"]}'),
             ('interruptions that stopped it', lambda s: f'{s["interruption"]["stopped"]}/{s["interruption"]["over_bot"]}'),
             ('stopped after the caller began p50 / max (ms)', lambda s: f'{ms(s["interruption"]["stop_after_p50"])} / {ms(s["interruption"]["stop_after_max"])}'),
             ('interruptions answered', lambda s: f'{s["interruption"]["answered"]}/{s["interruption"]["over_bot"]}')]
    for label, f in lines: print(f'{label:44s}' + ''.join(f'{f(s):>22s}' for s in S.values()))
    failed = []
    for m, r in results.items():
        print(f'\ngoals, {m}{"" if r["goals_apply"] else " (the code before: not checked)"}: '
              + ', '.join(f'{k} {"met" if ok else "MISSED"}' for k, ok in r['goals'].items()))
        if r['goals_apply']: failed += [f'{m}: {k}' for k, ok in r['goals'].items() if not ok]
    if failed: print('\nmissed: ' + '; '.join(failed))
    return failed


async def main(args) -> int:
    corpus = Path(args.corpus)
    if not corpus_ok(corpus, 'interruptions.py'): return 2
    first, todo = cases(corpus)
    print(f'{len(todo)} cases over the bot: ' + ', '.join(f'{sum(c["group"] == g for c in todo)} {g}' for g in ('backchannel', 'noise', 'interruption')))
    results = {}
    for mode in args.modes:
        results[mode] = await run_mode(mode, first, todo, args)
        if mode == 'before': results[mode]['commit'] = args.before
        path = write_result('interruptions', mode, results[mode], Path(args.out))
        print(f'wrote {path} ({results[mode]["run_s"]:.0f} s)', flush=True)
    return 1 if report(results) else 0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--modes', nargs='+', default=['offline'], choices=['offline', 'cloud', 'before'])
    ap.add_argument('--before', metavar='COMMIT', help="the commit the `before` mode's server runs (offline engines), for comparison")
    ap.add_argument('--corpus', default=str(ROOT.parent / 'shared' / 'corpus'), help='the real corpus (default ../shared/corpus)')
    ap.add_argument('--profile', default='typical', help="the fake cloud's latency profile (cloud)")
    ap.add_argument('--reply-timeout', type=float, default=8., help='longest wait for a reply to begin (s)')
    ap.add_argument('--setting', action='append', default=[], metavar='NAME=VALUE', help='a server setting by its variable name (repeatable)')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results'), help='folder of the JSON results')
    a = ap.parse_args(argv)
    if 'before' in a.modes and not a.before: ap.error('the before mode needs --before COMMIT')
    return a


if __name__ == '__main__':
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main(parse_args())))
