"""What moderating the replies costs: voice to voice on the cloud path with MODERATE_REPLIES off and on.

Run from the repository root (a few minutes):

    .venv/bin/python bench/moderation.py [--rounds 2]

An in-process hotline on the cloud path (the server's own engines from its settings: OpenAI Realtime transcription,
chat with tools, moderation, ElevenLabs' WebSocket voice) against the fake cloud at its `typical` profile (moderation
answers after 150 ms), whose ear is Whisper (a real recognizer). A simulated caller says the demo caller's five
recorded lines in real time; the calls alternate MODERATE_REPLIES off and on, `--rounds` of each. Figures per setting:
voice to voice (the caller stops -> the first audible sample of the reply, as the caller hears it), p50 / p90 (nearest
rank) and mean, and the turns left unanswered. The goal (exit status 0): every turn answered, and with moderation the
p50 within 50 ms of without (the check runs beside the voice). Writes bench/results/moderation.json.
"""
from __future__ import annotations

import argparse, asyncio, json, os, statistics, sys, tempfile
from datetime import datetime, timezone
from pathlib import Path

from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blackbox import code_version, pct  # noqa: E402  (the sibling bench module)

from artist_hotline.fakecloud import default_engines, running_fake_cloud
from artist_hotline.server import create_app
from artist_hotline.settings import CallSettings, Settings
from artist_hotline.simulate import Step, simulate_call

ROOT = Path(__file__).resolve().parent.parent
LINES = sorted((ROOT / 'recordings/caller').glob('*.wav'))
GOAL_MS = 50


async def one_call(cloud, moderate: bool, work: Path) -> list:
    "Voice to voice of each turn of one call (None: not answered)."
    s = Settings(database_url=f'sqlite:///{work}/calls-{moderate}.sqlite3', store_spill='', openai_api_key='fake', openai_base_url=cloud.openai_base_url,
                 elevenlabs_api_key='fake', elevenlabs_base_url=cloud.elevenlabs_base_url, elevenlabs_voice_id='voice-1',
                 call=CallSettings(moderate_replies=moderate))
    async with TestServer(create_app(s)) as srv:
        sim = await simulate_call(str(srv.make_url('')).rstrip('/'), [Step(wav=w, pause_s=0.8) for w in LINES])
    return [t.latency_s for t in sim.turns]


async def run(rounds: int) -> dict:
    got = {'off': [], 'on': []}
    with tempfile.TemporaryDirectory(prefix='bench-moderation-') as d:
        async with running_fake_cloud('typical', engines=default_engines(ear='whisper')) as cloud:
            for r in range(rounds):
                for name in ('off', 'on'):
                    got[name] += await one_call(cloud, name == 'on', Path(d))
                    print(f'round {r + 1}, moderation of replies {name}: {got[name][-len(LINES):]}', flush=True)
            checks = cloud.journal.count('moderation')
    ms = lambda s: None if s is None or s == float('inf') else round(s * 1000)  # an unanswered turn counts as never heard
    fig = lambda xs: dict(turns=len(xs), unanswered=sum(x is None for x in xs), p50_ms=ms(pct(xs, 50)), p90_ms=ms(pct(xs, 90)),
                          mean_ms=ms(statistics.mean(x for x in xs if x is not None)))
    return {'off': fig(got['off']), 'on': fig(got['on']), 'moderation_requests': checks, 'raw_s': got}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--rounds', type=int, default=2)
    ap.add_argument('--out', default=str(ROOT / 'bench/results/moderation.json'))
    a = ap.parse_args()
    out = asyncio.run(run(a.rounds))
    goals = {'every turn answered': out['off']['unanswered'] == out['on']['unanswered'] == 0,
             f'p50 with moderation within {GOAL_MS} ms of without': None not in (out['on']['p50_ms'], out['off']['p50_ms'])
                 and out['on']['p50_ms'] - out['off']['p50_ms'] <= GOAL_MS}
    out = dict(bench='moderation', date=datetime.now(timezone.utc).isoformat(timespec='seconds'), code=code_version(),
               load_avg=os.getloadavg(), cores=os.cpu_count(), profile='typical', goals=goals, **out)
    Path(a.out).write_text(json.dumps(out, indent=1) + '\n')
    for k in ('off', 'on'):
        f = out[k]
        print(f"replies moderated {k:>3}: p50 {f['p50_ms']} ms, p90 {f['p90_ms']} ms, mean {f['mean_ms']} ms, {f['unanswered']}/{f['turns']} unanswered")
    for goal, ok in goals.items(): print(f"{'ok  ' if ok else 'MISS'} {goal}")
    print('wrote', a.out)
    return 0 if all(goals.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
