"The calls report: loading with derived latencies, costs, rates, the written report, and calls made with the simulator."
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from artist_hotline.records import CallRecord, TurnRecord
from artist_hotline.report import (Prices, call_table, load_calls, load_turns, simulated_calls, summarize, summary_text,
                                   write_report)
from artist_hotline.store import Store, StoreSink, utcnow

def FakeCall(sid, caller):
    "What `StoreSink` reads of a call: its record."
    return CallRecord(sid, 'MZ' + sid[2:], caller, 'Synthetic Jason')


def reply(i, start, stt=0.4, llm=0.35, tts=0.3, **kw):
    "A caller turn with realistic stage times, starting at `start` seconds."
    e = start + 1.5
    kw = dict(caller_text=f'question {i}', reply_text='An answer of about sixty characters, give or take a few more.',
              heard_text='An answer of about sixty characters, give or take a few more.', outcome='replied',
              speech_start=start, speech_end=e, endpoint=e + .4, transcript=e + .4 + stt, first_token=e + .4 + stt + llm,
              first_sentence=e + .45 + stt + llm, first_audio=e + .4 + stt + llm + tts, first_sent=e + .41 + stt + llm + tts,
              audio_in_s=1.8, audio_out_s=4.0, chars_in=10, chars_out=62, prompt_tokens=900, completion_tokens=15,
              stt='openai:whisper-1', llm='openai:gpt-4o-mini', tts='elevenlabs:eleven_flash_v2_5') | kw
    return TurnRecord(i, **kw)


async def fill(db_url):
    "Three calls on two days, written through the sink: replies, a barge-in, a fallback, noise, and one call in progress."
    async with Store(db_url) as store, StoreSink(store) as sink:
        t0 = utcnow().replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
        plan = {'CA1': (t0, [reply(2, 3), reply(3, 12, stt=0.6), reply(4, 20, interrupted=True, outcome='barge_in', heard_text='An answer')], 60),
                'CA2': (t0 + timedelta(days=1), [reply(2, 3, llm=0.9), reply(3, 10, outcome='fallback', error='llm: nothing for 8 s', first_token=None,
                                                 prompt_tokens=0, completion_tokens=0),
                                                 TurnRecord(4, caller_text='uh', outcome='junk', error='filler', audio_in_s=0.4, stt='openai:whisper-1')], 45),
                'CA3': (t0 + timedelta(days=1, minutes=5), [reply(2, 3)], None)}
        for sid, (start, recs, dur) in plan.items():
            call = FakeCall(sid, '+15550000001')
            await sink.start_call(sid, call.caller, 'Synthetic Jason', start)
            await sink.turn(call, TurnRecord(1, kind='greeting', reply_text='Hi, Jason here!', heard_text='Hi, Jason here!', outcome='replied',
                                             first_sent=0.2, chars_out=15, audio_out_s=1.5, tts='elevenlabs:eleven_flash_v2_5'))
            for r in recs: await sink.turn(call, r)
            if dur is not None: await sink.end_call(sid, start + timedelta(seconds=dur), 'caller hung up')
        assert await sink.flush() and sink.failures == 0


async def test_load_with_derived_latencies(db_url):
    await fill(db_url)
    calls, turns = load_calls(db_url), load_turns(db_url)
    assert calls.sid.tolist() == ['CA1', 'CA2', 'CA3'] and str(calls.started_at.dt.tz) == 'UTC'
    assert calls.duration_s.tolist()[:2] == [60.0, 45.0] and np.isnan(calls.duration_s[2])
    assert len(turns) == 10 and turns.caller_turn.sum() == 7
    first = turns[(turns.call_sid == 'CA1') & (turns.idx == 2)].iloc[0]
    assert [round(first[f'{n}_ms']) for n in ('hangover', 'stt', 'first_token', 'first_audio', 'transport', 'total')] == [400, 400, 350, 300, 10, 1460]
    fb = turns[turns.outcome == 'fallback'].iloc[0]
    assert np.isnan(fb.first_token_ms) and np.isnan(fb.first_audio_ms) and not np.isnan(fb.total_ms)


async def test_costs_rates_and_summary(db_url):
    await fill(db_url)
    calls, turns = load_calls(db_url), load_turns(db_url)
    table = call_table(calls, turns)
    row = table.set_index('sid').loc['CA1']
    assert (row.caller_turns, row.barge_ins, row.fallbacks, row.ignored) == (3, 1, 0, 0)
    assert table.set_index('sid').loc['CA2'][['fallbacks', 'ignored']].tolist() == [1, 1]
    p = Prices()
    assert row.cost_stt == pytest.approx(3 * 1.8 / 60 * p.stt_per_min)
    assert row.cost_llm == pytest.approx(3 * (900 * p.llm_input_per_m + 15 * p.llm_output_per_m) / 1e6)
    assert row.cost_tts == pytest.approx((15 + 3 * 62) / 1000 * p.tts_per_1k_chars)
    assert row.cost_phone == pytest.approx(p.phone_per_min) and row.cost == pytest.approx(row.cost_stt + row.cost_llm + row.cost_tts + row.cost_phone)
    free = call_table(calls, turns.assign(stt='pocketsphinx', llm='scripted', tts='espeak-ng'), Prices(phone_per_min=0))
    assert free.cost.sum() == 0
    assert call_table(calls, turns.assign(stt='pocketsphinx'), Prices(charge_offline=True)).cost.sum() == pytest.approx(table.cost.sum())
    s = summarize(calls, turns)
    assert (s['calls'], s['calls_in_progress'], s['caller_turns']) == (3, 1, 7)
    assert (s['barge_in_rate'], s['fallback_rate'], s['ignored_rate']) == (round(1 / 7, 3),) * 3
    totals = turns[turns.caller_turn].total_ms.dropna()
    assert s['total_p50_ms'] == pytest.approx(np.percentile(totals, 50), abs=0.1) and s['total_p95_ms'] >= s['total_p50_ms']
    assert s['stt_p50_ms'] == pytest.approx(400, abs=0.1)
    assert 0.05 < s['cost_5_min_call'] < 0.5
    text = summary_text(s)
    assert 'speech-to-text' in text and 'p95' in text and '$0.10-0.15' in text


async def test_write_report_files_and_no_pyplot_leaks(tmp_path):
    import matplotlib.pyplot as plt
    db = f'sqlite:///{tmp_path}/calls.sqlite3'
    await fill(db)
    before = plt.get_fignums()
    rep = write_report(db, tmp_path / 'out')
    assert plt.get_fignums() == before
    pngs = [f for f in rep['files'].values() if f.endswith('.png')]
    assert len(pngs) == 7 and all(Path(f).read_bytes()[:4] == b'\x89PNG' for f in pngs)
    calls = pd.read_csv(rep['files']['calls.csv'])
    assert calls.sid.tolist() == ['CA1', 'CA2', 'CA3'] and 'summary' not in calls.columns
    summary = pd.read_csv(rep['files']['summary.csv']).set_index('figure').value
    assert float(summary['calls']) == 3 and rep['summary']['calls'] == 3 and rep['text'].startswith('calls: 3')


def test_report_on_an_empty_or_new_database(tmp_path):
    rep = write_report(f'sqlite:///{tmp_path}/new.sqlite3', tmp_path / 'out')  # no tables yet
    assert rep['summary']['calls'] == 0 and rep['summary']['total_p50_ms'] is None and len(rep['files']) == 10


async def test_empty_store_report(tmp_path):
    db = f'sqlite:///{tmp_path}/empty.sqlite3'
    async with Store(db): pass
    rep = write_report(db, tmp_path / 'out')
    assert rep['summary']['caller_turns'] == 0 and 'calls: 0' in rep['text']


async def test_a_simulated_call_lands_in_the_report(tmp_path):
    "One short call through the real server, the cloud SDKs on the fake cloud, and the Twilio simulator."
    db = f'sqlite:///{tmp_path}/sim.sqlite3'
    (sid,) = await simulated_calls(db, tmp_path / 'rec', scripts=[[0]], caller='+15550001234')
    calls, turns = load_calls(db), load_turns(db)
    assert calls.sid.tolist() == [sid] and calls.caller[0] == '+15550001234' and Path(calls.recording[0]).exists()
    t = turns[turns.caller_turn]
    assert len(t) == 1 and t.stt.iloc[0].startswith('openai') and t.prompt_tokens.iloc[0] > 0 and t.total_ms.notna().all()
    assert calls.summary[0].startswith('The caller talked about:')  # the fake cloud's answer to the summary request


async def test_the_report_compares_two_runs_with_different_settings(tmp_path):
    "Two runs of the same caller, one setting apart: each call knows its setup, and `report --compare` sets them side by side."
    from artist_hotline.cli import parser
    from artist_hotline.settings import TurnSettings, WordsSettings
    a, b = f'sqlite:///{tmp_path}/a.sqlite3', f'sqlite:///{tmp_path}/b.sqlite3'
    await simulated_calls(a, tmp_path / 'ra', scripts=[[0, 1, 2]])
    longer = TurnSettings(hangover_ms=900, words=WordsSettings(complete_ms=680, continues_ms=2000, number_ms=1600, one_number_ms=1100,
                                                               unpunctuated_ms=1300, stale_ms=1000))  # every silence rule 500 ms longer
    await simulated_calls(b, tmp_path / 'rb', scripts=[[0, 1, 2]], turn=longer)
    ca, cb = load_calls(a), load_calls(b)
    assert ca.fingerprint[0] != cb.fingerprint[0] and 'stt=openai' in ca.engines[0]
    rep = write_report(a, tmp_path / 'out', compare=b)
    both = pd.read_csv(rep['files']['compare.csv'])
    assert both.run.tolist() == ['this', 'other'] and both.setup.tolist() == [ca.fingerprint[0], cb.fingerprint[0]]
    assert both.hangover_p50_ms[1] > both.hangover_p50_ms[0] + 300, both.hangover_p50_ms  # the longer wait shows where it acts
    assert any(c.startswith('ended: ') for c in both) and 'this store and the other' in rep['text']
    assert parser().parse_args(['report', '--compare', b]).compare == b
