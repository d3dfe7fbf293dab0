"""Many callers at once: K simulated Twilio callers talking to one running hotline at the same time, in real time, on real
read speech; is every turn answered, and how long does each caller wait?

Run from the repository root (about a minute a step):

    .venv/bin/python bench/callers.py                      # offline: the default `serve` engines, no keys; 1 to 16 callers
    .venv/bin/python bench/callers.py --steps 1 8 --calls 4
    .venv/bin/python bench/callers.py --setting WHISPER_THREADS=1   # A/B a server setting

Needs the real corpus at ../shared/corpus (or --corpus DIR). The server is `artist-hotline serve` in a subprocess, as
`latency.py` starts it (blackbox.py). Each step starts K callers a little apart (`--stagger`, so their turns overlap
without being in lockstep); each makes `--calls` calls one after another, and each call hears the greeting out, says one
of the corpus's complete sentences in real time (each caller its own, in turn) and waits for the reply. Voice to voice is
judged as in `latency.py`: the caller's last voiced sample to the first audible sample it hears after it; a turn with no
reply within `--reply-timeout` counts as a failure (infinitely late), never dropped. The goal (offline, this 2-core
machine): every turn answered and voice to voice p90 <= 1.5 s at 8 callers and at every step below; the exit status is 1
when it is missed. The result names the most callers that held (`carried`).
The server runs with WHISPER_CALLS_PER_CORE=0 (no cap on open calls, so the steps can go past the cap it ships with,
which comes from this bench). Writes bench/results/callers-<mode>.json.
"""
from __future__ import annotations

import argparse, asyncio, collections, os, sys, time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blackbox import LABELS, ROOT, Stack, call_case, corpus_ok, file_record, ms, pct, reason_kind, write_result  # noqa: E402
from latency import judge  # noqa: E402

from artist_hotline.endpointing import sentence_cases

GOAL = dict(callers=8, v2v_p90=1.5)


async def caller(stack: Stack, http: aiohttp.ClientSession, todo: list, delay: float, reply_timeout: float) -> list:
    "One caller: after `delay`, its calls one after another; (case, the call as heard) each."
    await asyncio.sleep(delay)
    out = []
    for case in todo:
        h = await call_case(stack.url, http, case.pcm, case.end, reply_timeout)
        out.append((case, h))
    return out


async def step(stack: Stack, http: aiohttp.ClientSession, k: int, cases: list, args) -> dict:
    "K callers at once; the turns as the server recorded them, judged."
    plans = [[cases[(i * args.calls + j) % len(cases)] for j in range(args.calls)] for i in range(k)]
    started = time.monotonic()
    heard = await asyncio.gather(*[caller(stack, http, plan, i * args.stagger, args.reply_timeout) for i, plan in enumerate(plans)])
    seconds = time.monotonic() - started
    calls = [(case, h) for one in heard for case, h in one]
    filed = await asyncio.gather(*[file_record(h, http, stack.url) for _, h in calls])
    rows = [dict(judge(case, h), caller=i // args.calls) for i, ((case, _), h) in enumerate(zip(calls, filed))]
    v2v = [r['v2v_s'] for r in rows]
    s = dict(callers=k, turns=len(rows), answered=sum(v is not None for v in v2v), v2v=dict(p50=pct(v2v, 50), p90=pct(v2v, 90), max=pct(v2v, 100)),
             split_turns=sum(r['turns'] > 1 for r in rows), seconds=seconds,
             end_reasons=dict(collections.Counter(reason_kind(r.get('end_reason')) for r in rows).most_common()))
    print(f'{k:3d} callers: {s["answered"]}/{s["turns"]} answered, voice to voice p50 {ms(s["v2v"]["p50"])} ms, p90 {ms(s["v2v"]["p90"])} ms, '
          f'max {ms(s["v2v"]["max"])} ms; utterances split: {s["split_turns"]} ({seconds:.0f} s)', flush=True)
    return dict(summary=s, cases=rows)


async def main(args) -> int:
    corpus = Path(args.corpus)
    if not corpus_ok(corpus, 'callers.py'): return 2
    cases = sentence_cases(corpus)
    extra = {'WHISPER_CALLS_PER_CORE': '0'} | dict(kv.split('=', 1) for kv in args.setting)  # no cap on open calls: the steps go past it
    started = time.monotonic()
    async with Stack(args.mode, args.profile, extra) as stack, aiohttp.ClientSession() as http:
        print(f'{LABELS[args.mode]}: server {stack.health["providers"]}; {len(cases)} sentences, {args.calls} calls a caller, '
              f'steps {args.steps}; {os.cpu_count()} cores', flush=True)
        steps = [await step(stack, http, k, cases, args) for k in args.steps]
        out = dict(settings=dict(server=stack.settings, args={k: v for k, v in vars(args).items()}), engines=stack.engines(), logs=str(stack.scratch))
    ok = lambda s: s['answered'] == s['turns'] and s['v2v']['p90'] <= GOAL['v2v_p90']
    for st in steps: st['summary']['ok'] = ok(st['summary'])
    carried = max([st['summary']['callers'] for st in steps if all(o['summary']['ok'] for o in steps if o['summary']['callers'] <= st['summary']['callers'])], default=0)
    goals = dict(every_turn_answered_and_v2v_p90_le_1500ms_at_8_callers=carried >= GOAL['callers']) if args.mode == 'offline' else {}
    out = dict(out, steps=steps, carried=carried, goals=goals, goals_apply=args.mode == 'offline', run_s=time.monotonic() - started)
    path = write_result('callers', args.mode, out, Path(args.out))
    print(f'\nwrote {path}\nmost callers at once with every turn answered and voice to voice p90 <= 1.5 s (and so at every step below): {carried}')
    if goals: print('goals: ' + ', '.join(f'{k} {"met" if ok else "MISSED"}' for k, ok in goals.items()))
    return 0 if all(goals.values()) else 1


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--mode', default='offline', choices=['offline', 'cloud'])
    ap.add_argument('--steps', type=int, nargs='+', default=[1, 4, 8, 12, 16], help='numbers of callers at once')
    ap.add_argument('--calls', type=int, default=3, help='calls each caller makes, one after another')
    ap.add_argument('--stagger', type=float, default=0.25, help='seconds between one caller starting and the next')
    ap.add_argument('--corpus', default=str(ROOT.parent / 'shared' / 'corpus'), help='the real corpus (default ../shared/corpus)')
    ap.add_argument('--profile', default='typical', help="the fake cloud's latency profile (cloud)")
    ap.add_argument('--reply-timeout', type=float, default=10., help='longest wait for a reply after the end of speech (s); none by then is a failure')
    ap.add_argument('--setting', action='append', default=[], metavar='NAME=VALUE', help='a server setting by its variable name (repeatable)')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results'), help='folder of the JSON results')
    return ap.parse_args(argv)


if __name__ == '__main__':
    sys.exit(asyncio.run(main(parse_args())))
