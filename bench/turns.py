"""End of turn, measured through a running hotline: when does it judge the caller done, and what does it do with pauses,
phone numbers, lone digits and noise?

Run from the repository root (about 8 minutes a mode; --quick about 4):

    .venv/bin/python bench/turns.py                          # offline: the default `serve` engines, no keys
    .venv/bin/python bench/turns.py --modes cloud oracle     # the cloud path: fake cloud with the Whisper ear; the oracle
    .venv/bin/python bench/turns.py --quick --setting END_COMPLETE_MS=250   # fewer cases; A/B a server setting

Needs the real corpus at ../shared/corpus (or --corpus DIR). Each mode starts `artist-hotline serve` as a subprocess
(with `artist-hotline fake-cloud` as another for `cloud` and `oracle`, see blackbox.py), its call store a scratch SQLite
file and CALLS_UI_TOKEN set, so the bench reads the server's record of each call (`GET /calls/{sid}`). A simulated
Twilio caller (`artist_hotline.simulate`, the Media Streams protocol exactly) makes one call per case, one call at a
time: it hears the greeting out, says the case in real time, and waits for the reply (replies are skipped through,
not played out). The cases are `artist_hotline.endpointing`'s: complete sentences (LibriVox, JFK, "go forward ten
meters") with their labelled ends; the LibriVox ones again with a 500 ms and a 700 ms pause of their own room tone put
in mid-sentence; phone numbers read digit by digit with 300-500 ms gaps; lone spoken digits (their end the end of
their voiced part); speech-free noise (room noise recordings, the gaps between speakers of AMI meetings).

Figures, from what the caller heard and the server's record, with the server's call-clock times mapped onto the
caller's clock (see blackbox.py):
- end of turn after a complete sentence: the record's `endpoint` minus the true end of speech (the label);
- turns per end reason (the record's `end_reason`, numbers taken out);
- turns ended inside a mid-sentence pause (from its start to 150 ms after it), and bot audio heard before the sentence was over;
- phone numbers that stayed one turn; lone digits that were a turn (a turn ended on them and the caller heard a reply);
- false turns per minute of noise, and noise the bot replied to (the caller heard it);
- voice to voice over the complete sentences, paused or not: the caller's last voiced sample (the label) to the first
  audible sample the caller hears of audio that came after it (above simulate.SOUND_LEVEL in the µ-law it receives);
- word lag: the record's `words_ready` minus its `speech_end` (when the turn's words reached the turn-taker after the
  caller stopped), 'n/a' while the server does not record it;
- word error rate of what the server heard (its turns' transcripts of the case, joined) against the labelled words,
  over the complete sentences (paused or not), the phone numbers and the digits (`bench/heard.py` works it out for
  results written before it was recorded).
Percentiles are nearest-rank; a turn with no reply (or no end) counts as infinitely late, never dropped. The goals
are checked for every mode but the oracle (voice to voice for `cloud` only); the exit status is 1 when one is missed.
Writes bench/results/turns-<mode>.json.
"""
from __future__ import annotations

import argparse, asyncio, collections, dataclasses, logging, sys, time
from pathlib import Path

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blackbox import LABELS, ROOT, Stack, call_case, corpus_ok, file_record, ms, pct, reason_kind, voiced_digits, write_result  # noqa: E402 (the sibling module)

from artist_hotline.audio import SAMPLE_RATE
from artist_hotline.endpointing import Case, digit_cases, noise_cases, number_cases, paused, sentence_cases
from artist_hotline.offline import word_errors

GOALS = dict(end_p50=0.30, end_p90=0.45, v2v_p50=1.05, v2v_p90=1.25, false_per_min=1.0)
STAGES = ('endpoint', 'words_ready', 'transcript', 'stt_final', 'first_token', 'first_audio', 'first_sent')  # the turn record's times


def cases(corpus: Path, quick: bool, noise_s: float) -> list[Case]:
    "The cases, in the order they are said: sentences, the same with pauses, phone numbers, lone digits, noise."
    sentences = sentence_cases(corpus)
    pauses = []
    for c in sentences[:3]:  # the LibriVox sentences, with their word timings
        n = len(c.words)
        at = sorted({min(n - 2, max(0, round(n * f) - 1)) for f in ((0.5,) if quick else (1 / 3, 2 / 3))})  # after a word mid-sentence
        pauses += [paused(c, i, s) for s in (0.5, 0.7) for i in at]
    numbers = number_cases(corpus)
    numbers = numbers[::2] if quick else numbers  # quick: one take per speaker
    digits = digit_cases(corpus)  # six takes of each digit (three speakers, two takes), sorted by digit
    digits = [digits[d * 6 + (d + k) % 6] for d in range(10) for k in ((0,) if quick else (0, 3))]  # speakers in turn
    noise = [dataclasses.replace(c, pcm=c.pcm[:int(noise_s * SAMPLE_RATE)]) for c in noise_cases(corpus)]
    return sentences + pauses + numbers + voiced_digits(digits) + noise


def judge(case: Case, h) -> dict:
    "One case's row: the server's turns (times in seconds into the case) and what they mean."
    recs = h.caller_turns()
    turns = [dict(start=h.case_s(t.get('speech_start')), end=h.case_s(t.get('speech_end')), endpoint=h.case_s(t.get('endpoint')),
                  why=t.get('end_reason', ''), outcome=t.get('outcome'), words=t.get('partial_text', ''), heard=t.get('caller_text', ''),
                  word_lag=None if t.get('words_ready') is None or t.get('speech_end') is None else t['words_ready'] - t['speech_end'])
             for t in recs]
    row = dict(case=case.name, group=case.group, seconds=round(case.seconds, 2), sid=h.sid, greeted=h.greeted,
               clock_slack_s=h.clock_slack_s, turns=turns, said=said(case))
    if h.t0 is None: row['problem'] = 'no bot audio: the call clock could not be mapped'
    if case.end is None:  # speech-free: every turn is a false one
        row.update(false_turns=len(turns), replied_turns=sum(t['outcome'] in ('replied', 'fallback') for t in turns),
                   reply_heard=h.audible(h.at))
        return row
    stop = h.at + round(case.end * SAMPLE_RATE)
    holding = [i for i, t in enumerate(turns) if t['start'] is not None and t['start'] < case.end]  # the turn that holds the end of speech
    last, rec = (turns[holding[-1]], recs[holding[-1]]) if holding else (None, {})
    ends = [t['endpoint'] for t in turns if t['endpoint'] is not None]
    row.update(end=case.end, end_s=None if last is None or last['endpoint'] is None else last['endpoint'] - case.end,
               end_reason=last['why'] if last else None, word_lag_s=last['word_lag'] if last else None,
               v2v_s=h.first_sound_after(stop), bot_heard_early=h.audible(h.at, stop),
               cut=sum(e < case.words[-1][1] for e in ends),  # turns over before the last word began
               after_end={k: None if h.case_s(rec.get(k)) is None else h.case_s(rec[k]) - case.end for k in STAGES})  # that turn's stages
    if case.pause: row['cut_in_pause'] = sum(case.pause[0] <= e < case.pause[1] + 0.15 for e in ends)
    return row


def said(case: Case) -> str:
    "What the case says, from its labelled words ('' for speech-free noise)."
    return ' '.join(w for w, *_ in case.words)


def heard_right(rows: list[dict]) -> dict:
    "Word error rate of what the server heard (its turns' transcripts, joined) against what was said, over `rows` that say something."
    errors = words = 0
    for r in rows:
        if not r.get('said'): continue
        e, n = word_errors(r['said'], ' '.join(t['heard'] or '' for t in r['turns']))
        errors, words = errors + e, words + n
    return dict(wer=errors / words if words else None, words=words)


def heard_by_group(rows: list[dict]) -> dict:
    "`heard_right` over the complete sentences (paused or not), the phone numbers and the digits."
    g = lambda *names: [r for r in rows if r['group'] in names]
    return dict(complete=heard_right(g('sentence', 'pause 500', 'pause 700')), numbers=heard_right(g('number')), digits=heard_right(g('digit')))


def summarize(rows: list[dict], mode: str) -> dict:
    "A mode's figures and its goals."
    g = lambda *names: [r for r in rows if r['group'] in names]
    sent, num, dig, noise = g('sentence'), g('number'), g('digit'), g('noise')
    complete = g('sentence', 'pause 500', 'pause 700')
    lags = [r['word_lag_s'] for r in sent if r['word_lag_s'] is not None]
    minutes = sum(r['seconds'] for r in noise) / 60
    false = sum(r['false_turns'] for r in noise)
    s = dict(
        end_after_sentence=dict(p50=pct([r['end_s'] for r in sent], 50), p90=pct([r['end_s'] for r in sent], 90), n=len(sent)),
        end_reasons={grp: dict(collections.Counter(reason_kind(t['why']) for r in g(grp) for t in r['turns']).most_common())
                     for grp in dict.fromkeys(r['group'] for r in rows)},
        pauses={p: dict(cases=len(g(p)), turn_ended_in_pause=sum(r['cut_in_pause'] > 0 for r in g(p)),
                        bot_heard_before_sentence_over=sum(r['bot_heard_early'] for r in g(p))) for p in ('pause 500', 'pause 700')},
        sentences_bot_heard_early=sum(r['bot_heard_early'] for r in sent),
        numbers_one_turn=sum(len(r['turns']) == 1 and r['cut'] == 0 for r in num), numbers=len(num),
        digits_a_turn=sum(r['end_s'] is not None and r['v2v_s'] is not None for r in dig), digits=len(dig),
        digits_turn_ended=sum(r['end_s'] is not None for r in dig),
        noise=dict(minutes=minutes, false_turns=false, per_minute=false / minutes if minutes else None,
                   cases_replied_to=sum(r['reply_heard'] for r in noise), cases=len(noise)),
        v2v=dict(p50=pct([r['v2v_s'] for r in complete], 50), p90=pct([r['v2v_s'] for r in complete], 90), n=len(complete),
                 no_reply=sum(r['v2v_s'] is None for r in complete)),
        v2v_by_group={grp: pct([r['v2v_s'] for r in g(grp)], 50) for grp in ('sentence', 'pause 500', 'pause 700', 'number', 'digit')},
        word_lag=dict(p50=pct(lags, 50), p90=pct(lags, 90), n=len(lags)) if lags else 'n/a',
        heard=heard_by_group(rows),
        complete_stages_after_end_p50={k: (lambda x: float(np.median(x)) if x else None)([r['after_end'][k] for r in complete if r['after_end'][k] is not None])
                                       for k in STAGES},
        unmapped_calls=sum('problem' in r for r in rows), calls=len(rows))
    e, p = s['end_after_sentence'], s['pauses']
    goals = dict(end_after_sentence_p50_le_300ms=e['p50'] <= GOALS['end_p50'], end_after_sentence_p90_le_450ms=e['p90'] <= GOALS['end_p90'],
                 no_turn_ended_in_500_700ms_pauses=all(x['turn_ended_in_pause'] == 0 for x in p.values()),
                 no_bot_audio_before_sentence_over=s['sentences_bot_heard_early'] == 0 and all(x['bot_heard_before_sentence_over'] == 0 for x in p.values()),
                 every_phone_number_one_turn=s['numbers_one_turn'] == s['numbers'], every_lone_digit_a_turn=s['digits_a_turn'] == s['digits'],
                 false_turns_per_min_of_noise_le_1=s['noise']['per_minute'] is not None and s['noise']['per_minute'] <= GOALS['false_per_min'],
                 no_reply_to_noise=s['noise']['cases_replied_to'] == 0)
    if mode == 'cloud':
        goals.update(voice_to_voice_p50_le_1050ms=s['v2v']['p50'] <= GOALS['v2v_p50'], voice_to_voice_p90_le_1250ms=s['v2v']['p90'] <= GOALS['v2v_p90'])
    return dict(summary=s, goals={k: bool(v) for k, v in goals.items()}, goals_apply=mode != 'oracle')


async def run_mode(mode: str, todo: list[Case], args) -> dict:
    "Every case against one mode's processes, one call at a time."
    extra = dict(kv.split('=', 1) for kv in args.setting)
    started = time.monotonic()
    async with Stack(mode, args.profile, extra) as stack, aiohttp.ClientSession() as http:
        print(f'\n{LABELS[mode]}: server {stack.health["providers"]}' + (f', fake cloud ear {stack.cloud["ear"]}' if stack.cloud_url else ''), flush=True)
        filed = []
        for i, case in enumerate(todo):  # one call at a time; the server files each call's record while the next one goes on
            if mode == 'oracle' and case.words: await stack.register(http, case.pcm, words=case.words)
            h = await call_case(stack.url, http, case.pcm, case.end, args.reply_timeout, args.listen_after)
            filed.append(asyncio.create_task(file_record(h, http, stack.url)))
            heard = ('no reply' if (v := h.first_sound_after(h.at + round(case.end * SAMPLE_RATE))) is None else f'voice to voice {ms(v)} ms'
                     ) if case.end is not None else f'bot heard: {h.audible(h.at)}'
            print(f'  {i + 1:2d}/{len(todo)} {case.group:9s} {case.name[:28]:28s} {heard}', flush=True)
        rows = [judge(case, h) for case, h in zip(todo, await asyncio.gather(*filed))]
        print('\nper case, from the server\'s records: turns; the end of the turn holding the end of speech (ms after it) and why')
        for r in rows:
            print(f'  {r["group"]:9s} {r["case"][:28]:28s} turns {len(r["turns"])}' + (f'  end {ms(r["end_s"])}  {r["end_reason"] or "(no turn)"}'
                  if 'end' in r else f'  {r["false_turns"]} false') + (f'  [{r["problem"]}]' if 'problem' in r else ''))
        out = dict(settings=dict(server=stack.settings, args={k: v for k, v in vars(args).items() if k != 'modes'}),
                   engines=stack.engines(), logs=str(stack.scratch))
    return dict(out, **summarize(rows, mode), cases=rows, run_s=time.monotonic() - started)


def report(results: dict[str, dict]):
    "The figures side by side, a column per mode, and the goals."
    col = lambda f: ''.join(f'{f(r):>26s}' for r in results.values())
    print(f'\n{"":46s}' + ''.join(f'{m:>26s}' for m in results))
    S = {m: r['summary'] for m, r in results.items()}
    lines = [('end after a complete sentence p50 / p90 (ms)', lambda s: f'{ms(s["end_after_sentence"]["p50"])} / {ms(s["end_after_sentence"]["p90"])}'),
             ('turns ended in a 500 / 700 ms pause', lambda s: f'{s["pauses"]["pause 500"]["turn_ended_in_pause"]}/{s["pauses"]["pause 500"]["cases"]}'
                                                             f' / {s["pauses"]["pause 700"]["turn_ended_in_pause"]}/{s["pauses"]["pause 700"]["cases"]}'),
             ('bot heard before the sentence was over', lambda s: str(s['sentences_bot_heard_early'] + sum(p['bot_heard_before_sentence_over'] for p in s['pauses'].values()))),
             ('phone numbers that stayed one turn', lambda s: f'{s["numbers_one_turn"]}/{s["numbers"]}'),
             ('lone digits that were a turn', lambda s: f'{s["digits_a_turn"]}/{s["digits"]}'),
             ('false turns per minute of noise', lambda s: 'n/a' if s['noise']['per_minute'] is None else
                 f'{s["noise"]["per_minute"]:.1f} ({s["noise"]["false_turns"]} in {s["noise"]["minutes"]:.1f} min)'),
             ('noise cases the bot replied to', lambda s: f'{s["noise"]["cases_replied_to"]}/{s["noise"]["cases"]}'),
             ('voice to voice p50 / p90 (ms)', lambda s: f'{ms(s["v2v"]["p50"])} / {ms(s["v2v"]["p90"])}'),
             ('word lag p50 / p90 (ms)', lambda s: 'n/a' if s['word_lag'] == 'n/a' else f'{ms(s["word_lag"]["p50"])} / {ms(s["word_lag"]["p90"])}'),
             ('word error rate: sentences / numbers', lambda s: f'{s["heard"]["complete"]["wer"]:.2f} / {s["heard"]["numbers"]["wer"]:.2f}')]
    for label, f in lines: print(f'{label:46s}' + ''.join(f'{f(s):>26s}' for s in S.values()))
    for m, s in S.items():
        print(f'\n{LABELS[m]}: end reasons of the turns, by case group')
        for grp, reasons in s['end_reasons'].items():
            print(f'  {grp:10s} ' + '; '.join(f'{n} × {why}' for why, n in reasons.items()))
    failed = []
    for m, r in results.items():
        missed = [k for k, ok in r['goals'].items() if not ok]
        tag = '' if r['goals_apply'] else ' (an upper bound: its goals are not checked)'
        print(f'\ngoals, {LABELS[m]}{tag}: ' + ', '.join(f'{k} {"met" if ok else "MISSED"}' for k, ok in r['goals'].items()))
        if r['goals_apply']: failed += [f'{m}: {k}' for k in missed]
    if failed: print('\nmissed: ' + '; '.join(failed))
    return failed


async def main(args) -> int:
    corpus = Path(args.corpus)
    if not corpus_ok(corpus, 'turns.py'): return 2
    todo = cases(corpus, args.quick, args.noise_s)
    groups = collections.Counter(c.group for c in todo)
    print(f'{len(todo)} cases ({", ".join(f"{n} {g}" for g, n in groups.items())}), {sum(c.seconds for c in todo) / 60:.1f} min of audio a mode; '
          f'modes: {", ".join(args.modes)}')
    results = {}
    for mode in args.modes:
        results[mode] = await run_mode(mode, todo, args)
        path = write_result('turns', mode, results[mode], Path(args.out))
        print(f'wrote {path} ({results[mode]["run_s"]:.0f} s)', flush=True)
    return 1 if report(results) else 0


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--modes', nargs='+', default=['offline'], choices=['offline', 'cloud', 'oracle'])
    ap.add_argument('--quick', action='store_true', help='fewer cases: one pause place per sentence, one number per speaker, one take per digit, 15 s of each noise')
    ap.add_argument('--noise-s', type=float, help='seconds of each noise recording to play (default 30; 15 with --quick)')
    ap.add_argument('--corpus', default=str(ROOT.parent / 'shared' / 'corpus'), help='the real corpus (default ../shared/corpus)')
    ap.add_argument('--profile', default='typical', help="the fake cloud's latency profile (cloud, oracle)")
    ap.add_argument('--reply-timeout', type=float, default=8., help='longest wait for a reply after the end of speech (s); none by then is a failure')
    ap.add_argument('--listen-after', type=float, default=1.5, help='how long the caller listens for a reply after speech-free noise (s)')
    ap.add_argument('--setting', action='append', default=[], metavar='NAME=VALUE', help='a server setting by its variable name (repeatable)')
    ap.add_argument('--out', default=str(ROOT / 'bench' / 'results'), help='folder of the JSON results')
    a = ap.parse_args(argv)
    if a.noise_s is None: a.noise_s = 15. if a.quick else 30.
    return a


if __name__ == '__main__':
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main(parse_args())))
