"""A blocked number against a stalled database: how soon does a running `serve` reject it?

Run from the repository root (about half a minute):

    .venv/bin/python bench/blocks.py

Starts `artist-hotline serve` as a subprocess (its store a scratch SQLite file, the light offline engines, signatures
checked), blocks a number through `POST /blocks`, then stalls the database: another connection holds SQLite's
exclusive lock, so every statement of the server waits (the store's deadline is STORE_TIMEOUT_S). During the stall,
Twilio's voice webhook, signed as Twilio signs it, is posted from the blocked number 100 times one after another and
50 times at once (under MAX_PENDING_BODIES, 64, beyond which bodies are refused unread with a 503); and once from a
number that is not blocked, which waits for the store and is answered degraded.
Figures: the seconds from sending each webhook to its whole answer, p50 / p99 / max (nearest rank), and what each
answer was. The goal (exit status 0): every blocked call answered `<Reject>` within 100 ms, the control call
not rejected (the stall was real: it took longer than the blocked calls). Writes bench/results/blocks.json.
"""
from __future__ import annotations

import argparse, asyncio, json, os, socket, sqlite3, subprocess, sys, tempfile, time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blackbox import code_version  # noqa: E402  (the sibling bench module)

from artist_hotline.settings import ENV_NAMES
from artist_hotline.simulate import twilio_signature, voice_params

ROOT = Path(__file__).resolve().parent.parent
TOKEN, PUBLIC, UI = 'bench-auth-token', 'https://hotline.example', 'bench-ui'
REJECT = '<?xml version="1.0" encoding="UTF-8"?><Response><Reject /></Response>'
GOAL_S = 0.100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def pct(xs: list, q: float) -> float:
    "Nearest-rank percentile."
    xs = sorted(xs)
    return xs[max(0, min(len(xs) - 1, round(q * len(xs) + 0.5) - 1))]


async def webhook(http: aiohttp.ClientSession, base: str, i: int, caller: str) -> tuple[float, str]:
    "Seconds to the whole answer of one signed voice webhook, and the answer."
    form = voice_params(f'CA{i:032x}', 'AC' + '1' * 32, caller)
    t0 = time.perf_counter()
    async with http.post(base + '/voice', data=form, headers={'X-Twilio-Signature': twilio_signature(TOKEN, PUBLIC + '/voice', form)}) as r:
        text = await r.text()
    return time.perf_counter() - t0, text


async def run(work: Path) -> dict:
    port, db = free_port(), work / 'calls.sqlite3'
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | dict(
        HOST='127.0.0.1', PORT=str(port), DATABASE_URL=f'sqlite:///{db}', TWILIO_AUTH_TOKEN=TOKEN, PUBLIC_URL=PUBLIC, CALLS_UI_TOKEN=UI,
        STT_PROVIDER='pocketsphinx', TTS_PROVIDER='espeak', STORE_SPILL=str(work / 'spill.jsonl'), LOG_LEVEL='ERROR')
    log = (work / 'serve.log').open('w')
    proc = subprocess.Popen([str(Path(sys.executable).parent / 'artist-hotline'), 'serve'], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    base, lock = f'http://127.0.0.1:{port}', None
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(600):
                if proc.poll() is not None: raise SystemExit(f'serve exited {proc.returncode}: {(work / "serve.log").read_text()[-2000:]}')
                try:
                    if (await http.get(base + '/health')).status == 200: break
                except aiohttp.ClientError: pass
                await asyncio.sleep(0.1)
            r = await http.post(base + '/blocks', json={'number': '+1 555 666 0001', 'hours': 1, 'reason': 'bench'}, headers={'Authorization': f'Bearer {UI}'})
            assert r.status == 201, await r.text()
            lock = sqlite3.connect(db, timeout=0, isolation_level=None)
            lock.execute('BEGIN EXCLUSIVE')  # the database stalls: the server's statements wait for this lock
            one_by_one = [await webhook(http, base, i, '+15556660001') for i in range(100)]
            at_once = await asyncio.gather(*[webhook(http, base, 100 + i, '+15556660001') for i in range(50)])
            control = await webhook(http, base, 999, '+15557770002')
            lock.rollback()
            health = await (await http.get(base + '/health')).json()
    finally:
        if lock is not None: lock.close()
        proc.terminate()
        try: proc.wait(30)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()
    fig = lambda xs: dict(n=len(xs), rejected=sum(t == REJECT for _, t in xs), p50_ms=round(pct([s for s, _ in xs], .5) * 1000, 1),
                          p99_ms=round(pct([s for s, _ in xs], .99) * 1000, 1), max_ms=round(max(s for s, _ in xs) * 1000, 1))
    return dict(one_by_one=fig(one_by_one), at_once=fig(list(at_once)),
                control=dict(seconds=round(control[0], 3), rejected=control[1] == REJECT, answer=control[1][:120]),
                blocked_calls=health['blocked_calls'])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT / 'bench/results/blocks.json'))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix='bench-blocks-') as d: out = asyncio.run(run(Path(d)))
    blocked = [out['one_by_one'], out['at_once']]
    goals = {'every blocked call rejected': all(f['rejected'] == f['n'] for f in blocked),
             f'each within {GOAL_S * 1000:.0f} ms': all(f['max_ms'] <= GOAL_S * 1000 for f in blocked),
             'the control call waited for the stalled store and was not rejected': not out['control']['rejected']
                 and out['control']['seconds'] * 1000 > max(f['max_ms'] for f in blocked)}
    out = dict(bench='blocks', date=datetime.now(timezone.utc).isoformat(timespec='seconds'), code=code_version(),
               load_avg=os.getloadavg(), cores=os.cpu_count(), goals=goals, **out)
    Path(a.out).write_text(json.dumps(out, indent=1) + '\n')
    for k in ('one_by_one', 'at_once'):
        f = out[k]
        print(f"{k.replace('_', ' '):>10}: {f['rejected']}/{f['n']} rejected, p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms, max {f['max_ms']} ms")
    print(f"   control: {out['control']['seconds']} s, {'rejected' if out['control']['rejected'] else 'taken'}: {out['control']['answer'][:80]}")
    for goal, ok in goals.items(): print(f"{'ok  ' if ok else 'MISS'} {goal}")
    print('wrote', a.out)
    return 0 if all(goals.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
