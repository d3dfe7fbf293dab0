"Retention and forgetting: `prune` and `forget` leave nothing behind in SQLite and PostgreSQL, the schedule deletes once across two replicas, the CLI and the API do the same."
import asyncio, os, subprocess, sys
from datetime import timedelta
from pathlib import Path

import aiohttp
import sqlalchemy as sa

from artist_hotline.records import TurnRecord
from artist_hotline.settings import ENV_NAMES
from artist_hotline.store import Store, calls, events, refusals, turns, utcnow
from test_replicas import cloud, replicas  # noqa: F401 (fixtures: two `serve` replicas on one PostgreSQL schema)

CLI = [sys.executable, '-c', 'import sys; from artist_hotline.cli import main; sys.exit(main())']


async def seed(db: str, rows: list) -> None:
    "Calls (sid, caller, days old), each with a turn, an event and a summary; a refusal of each caller, written another way."
    async with Store(db) as s:
        for sid, caller, days in rows:
            await s.start_call(sid, caller, 'Jason', started_at=utcnow() - timedelta(days=days))
            await s.write_turn(sid, TurnRecord(0, caller_text='my number is 555 0100'))
            await s.add_event(sid, 'barge_in')
            await s.end_call(sid, summary='talked about the blue period')
            await s._tx(lambda c, caller=caller, days=days: c.execute(refusals.insert().values(
                caller=caller.replace('+1', '+1 '), at=utcnow() - timedelta(days=days), reason='caller over the hourly limit')))


async def counts(db: str) -> dict:
    async with Store(db) as s:
        return await s._tx(lambda c: {t.name: c.execute(sa.select(sa.func.count()).select_from(t)).scalar() for t in (calls, turns, events, refusals)})


async def test_prune_and_forget_leave_nothing_behind(db_url):
    await seed(db_url, [('CA1', '+15551230001', 40), ('CA2', '+15551230002', 40), ('CA3', '+15551230001', 1), ('CA4', '+15551230003', 1)])
    async with Store(db_url) as s:
        done = await s.prune(30)
        assert {k: done[k] for k in ('calls', 'turns', 'events', 'refusals')} == dict(calls=2, turns=2, events=2, refusals=2)
        assert await s.last_summary('+15551230002') is None and await s.last_summary('+15551230001') == 'talked about the blue period'
        done = await s.forget('+1 (555) 123-0001')
        assert {k: done[k] for k in ('calls', 'turns', 'events', 'refusals')} == dict(calls=1, turns=1, events=1, refusals=1)
        assert await s.last_summary('+15551230001') is None
    assert await counts(db_url) == dict(calls=1, turns=1, events=1, refusals=1)  # only the young call of the third caller


async def test_the_schedule_deletes_once_across_replicas(replicas, pg_url, tmp_path):
    await seed(pg_url, [('CA' + str(i) * 32, f'+1555123000{i}', 40) for i in range(1, 4)])
    a, b = await replicas(RETENTION_DAYS='30', PRUNE_EVERY_S='0.3', CALLS_UI_TOKEN='ui')
    for _ in range(100):
        if (await counts(pg_url))['calls'] == 0: break
        await asyncio.sleep(0.1)
    assert await counts(pg_url) == dict(calls=0, turns=0, events=0, refusals=0)
    logs = lambda: (tmp_path / 'A.log').read_text() + (tmp_path / 'B.log').read_text()
    for _ in range(100):  # the round that deleted them logs it once it is done
        if 'deleted 3 calls' in logs(): break
        await asyncio.sleep(0.1)
    rounds = logs().count('retention (30 days)')
    for _ in range(100):  # a few more rounds of the schedule, on both replicas
        if logs().count('retention (30 days)') >= rounds + 3: break
        await asyncio.sleep(0.1)
    assert logs().count('deleted 3 calls') == 1, logs()  # one replica did it, once
    await seed(pg_url, [('CA' + '9' * 32, '+15559990009', 0)])
    async with aiohttp.ClientSession(headers={'Authorization': 'Bearer ui'}) as http:
        r = await http.delete(b.base + '/callers/+1 555 999 0009')
        assert r.status == 200 and (await r.json())['calls'] == 1
    assert await counts(pg_url) == dict(calls=0, turns=0, events=0, refusals=0)


def test_forget_and_prune_commands(tmp_path):
    db = f'sqlite:///{tmp_path}/calls.sqlite3'
    asyncio.run(seed(db, [('CA1', '+15551230001', 40), ('CA2', '+15551230002', 1)]))
    rec = tmp_path / 'recordings/calls'; rec.mkdir(parents=True)
    (rec / 'CA2.wav').write_bytes(b'RIFF')
    async def point(): 
        async with Store(db) as s: await s.end_call('CA2', recording=str(rec / 'CA2.wav'))
    asyncio.run(point())
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | {'RECORDINGS_DIR': str(rec)}
    run = lambda *args: subprocess.run(CLI + [*args, '--db', db], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    r = run('prune')
    assert r.returncode == 1 and 'set RETENTION_DAYS' in r.stderr
    r = run('prune', '--days', '30')
    assert r.returncode == 0 and 'deleted 1 turns, 1 events, 1 calls, 0 recordings, 1 refusals' in r.stdout, (r.stdout, r.stderr)
    r = run('forget', '+1 555 123 0002')
    assert r.returncode == 0 and '1 calls, 1 recordings' in r.stdout, (r.stdout, r.stderr)
    assert not (rec / 'CA2.wav').exists() and asyncio.run(counts(db)) == dict(calls=0, turns=0, events=0, refusals=0)
