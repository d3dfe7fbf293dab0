"""README-ready markdown tables from the benches' JSON results (bench/results/<bench>-<mode>.json).

    .venv/bin/python bench/table.py                      # every result in bench/results
    .venv/bin/python bench/table.py bench/results/turns-*.json
    .venv/bin/python bench/table.py bench/scorecards/eval-*.json   # the eval's scorecards, per caller kind
"""
from __future__ import annotations

import collections, json, sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / 'results'
ORDER = ['offline', 'cloud', 'cloud-known', 'oracle', 'prototype', 'before']
SHORT = {'offline': 'offline', 'cloud': 'cloud (Whisper ear)', 'oracle': 'oracle (upper bound)', 'prototype': "prototype's design",
         'before': 'offline, the code before (104f528)', 'cloud-known': 'cloud path (the fake cloud with the known ear)'}


def ms(x) -> str:
    "Seconds as '0.61 s' ('n/a' for none, 'never' for a failure counted as infinitely late)."
    if x is None or x == 'n/a': return 'n/a'
    return 'never' if x == float('inf') else f'{x:.2f} s'


def pair(d, a='p50', b='p90') -> str:
    return 'n/a' if not isinstance(d, dict) else f'{ms(d[a])} / {ms(d[b])}'


def table(head: list[str], rows: list[list[str]]) -> str:
    return '\n'.join(['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)] + ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows])


def name(r: dict) -> str:
    "The row's mode, or the commit it measured when the bench ran another checkout's code (`code_under_test`)."
    return f"{SHORT[r['mode']]}, before ({r['code_under_test'].split(',')[0]})" if 'code_under_test' in r else SHORT[r['mode']]


def missed(r: dict) -> str:
    if not r.get('goals_apply', True): return '(not checked)'
    m = [k for k, ok in r.get('goals', {}).items() if not ok]
    return ', '.join(m) if m else 'none'


def turns_tables(rs: list[dict]) -> str:
    rows = []
    for r in rs:
        s = r['summary']
        p5, p7, n = s['pauses']['pause 500'], s['pauses']['pause 700'], s['noise']
        early = s['sentences_bot_heard_early'] + p5['bot_heard_before_sentence_over'] + p7['bot_heard_before_sentence_over']
        rows.append([name(r), pair(s['end_after_sentence']), f"{p5['turn_ended_in_pause']}/{p5['cases']} / {p7['turn_ended_in_pause']}/{p7['cases']}",
                     early, f"{s['numbers_one_turn']}/{s['numbers']}", f"{s['digits_a_turn']}/{s['digits']}",
                     'n/a' if n['per_minute'] is None else f"{n['per_minute']:.1f} ({n['false_turns']} in {n['minutes']:.1f} min)",
                     f"{n['cases_replied_to']}/{n['cases']}", pair(s['v2v']), pair(s['word_lag']), missed(r)])
    head = ['mode', 'end after a sentence p50 / p90', 'turns ended in 500 / 700 ms pauses', 'bot heard before the sentence was over',
            'numbers one turn', 'lone digits a turn', 'false turns / min of noise', 'noise replied to', 'voice to voice p50 / p90',
            'word lag p50 / p90', 'goals missed']
    reasons = collections.OrderedDict()
    for r in rs:
        for grp, c in r['summary']['end_reasons'].items():
            for why, k in c.items(): reasons.setdefault((grp, why), {})[r['mode']] = k
    groups = list(dict.fromkeys(grp for grp, _ in reasons))  # in the order the cases were said
    why_rows = [[grp, why] + [reasons[(grp, why)].get(r['mode'], 0) for r in rs]
                for grp, why in sorted(reasons, key=lambda k: (groups.index(k[0]), -sum(reasons[k].values())))]
    return table(head, rows) + '\n\nTurns per end reason (the server\'s `end_reason`, numbers taken out):\n\n' + \
        table(['cases', 'end reason'] + [name(r) for r in rs], why_rows)


def latency_table(rs: list[dict]) -> str:
    rows = []
    for r in rs:
        s, st = r['summary'], r['summary']['stages_after_end_p50']
        rows.append([name(r), f"{s['replied']}/{s['turns']}", f"{ms(s['v2v']['p50'])} / {ms(s['v2v']['p90'])} / {ms(s['v2v']['p95'])}",
                     ms(s['v2v_sentences']['p50']), ms(s['v2v_digits']['p50']), ms(st['endpoint']), ms(st.get('words_ready')), ms(st['first_token']),
                     ms(st['first_audio']), ms(s['first_frame']['p50']), missed(r)])
    return table(['mode', 'replied', 'voice to voice p50 / p90 / p95', 'sentences p50', 'digits p50', 'turn over p50', 'words ready p50',
                  'first token p50', 'first speech audio p50', 'first bot frame p50', 'goals missed'], rows)


def interruptions_table(rs: list[dict]) -> str:
    rows = []
    for r in rs:
        b, n, i = (r['summary'][k] for k in ('backchannel', 'noise', 'interruption'))
        rows.append([name(r), f"{b['stopped']} of {b['over_bot']}", f"{n['stopped']} of {n['over_bot']}", f"{i['stopped']} of {i['over_bot']}",
                     f"{ms(i['stop_after_p50'])} / {ms(i['stop_after_max'])}", f"{i['answered']} of {i['over_bot']}",
                     missed(r)])
    return table(['mode', 'backchannels that stopped the bot', 'noises that stopped it', 'interruptions that stopped it',
                  'stopped after the caller began, p50 / max', 'interruptions answered', 'goals missed'], rows)


def callers_table(rs: list[dict]) -> str:
    rows = []
    for r in rs:
        for st in r['steps']:
            s = st['summary']
            rows.append([name(r), str(s['callers']), f"{s['answered']} of {s['turns']}", f"{ms(s['v2v']['p50'])} / {ms(s['v2v']['p90'])} / {ms(s['v2v']['max'])}",
                         str(s['split_turns']), 'yes' if s['ok'] else 'no'])
    return table(['code', 'callers at once', 'turns answered', 'voice to voice p50 / p90 / max', 'utterances answered in two parts',
                  'every turn answered, p90 <= 1.5 s'], rows)


def capacity_table(rs: list[dict]) -> str:
    rows = []
    for r in rs:
        for st in r['steps']:
            lag, w, blame = st['loop_lag_ms'], st.get('wire', {}), st['starved_blame']
            verdict = ('clean' if st['clean'] else 'ok, starved' if st['ok'] else 'FAIL') + (', client side saturated' if st['client']['saturated'] else '') \
                + (', disturbed' if st['disturbed'] else '')
            rows.append([str(st['n']), f"{lag['p50']:.1f} / {lag['p99']:.1f} ms", f"{st['server_cpu']:.0%}", f"{st['cpu_per_call']:.2%}",
                         f"{st['mb_per_call']:.2f} MB", f"{ms(st['reply_latency_ms']['p50'] / 1000)} / {ms(st['reply_latency_ms']['p95'] / 1000)}",
                         f"{st['starved']} ({blame.get('server', 0) + blame.get('none found', 0)})", str(st['frames_lost']),
                         f"{w.get('realtime', 0)} / {w.get('tts_ws', 0)} / {w.get('stt', 0)} / {w.get('tts', 0) + w.get('speech', 0)}", verdict])
    return table(['calls at once', 'loop lag p50 / p99', 'server CPU', 'CPU per call', 'memory per call', 'reply p50 / p95',
                  "starved playbacks (the server's)", 'frames lost', 'realtime sessions / speech socket contexts / file transcriptions / HTTP speech',
                  'verdict'], rows)


def eval_table(cards: list[tuple[str, dict]]) -> str:
    "`artist-hotline eval` scorecards (bench/scorecards/eval-<mode>.json): per hotline and caller kind, then what failed."
    f = lambda v: 'n/a' if v is None else f'{v:.2f}'
    rows, failed = [], []
    for mode, c in cards:
        for k in c['kinds']:
            rows.append([mode, k['kind'], f"{k['passed']} of {k['ran']}", f(k['wer']), ms(k['end_of_turn_s']), ms(k['voice_to_voice_s']), k['cut_offs']])
        for s in c['scenarios']:
            bad = [ch for ch in s['checks'] if ch['ok'] is False]
            if s['status'] != 'passed':
                failed.append(f"{mode} {s['name']}: " + ('; '.join(f"turn {ch['turn']}: {ch['what']}: {ch['detail']}" if ch['turn'] else f"{ch['what']}: {ch['detail']}"
                                                              for ch in bad) or s.get('note', s['status'])))
    out = table(['hotline', 'caller kind', 'scenarios passed', 'word error rate', 'end of turn (mean)', 'voice to voice (mean)', 'turns cut off or interrupted'], rows)
    out += '\n\n' + '; '.join(f"{mode}: {sum(s['status'] == 'passed' for s in c['scenarios'])} of {len(c['scenarios'])} scenarios passed, "
                               f"{c['meta']['started'][:10]}, {c['meta']['concurrency']} at a time, load {c['meta']['load_average'][0]:.1f}" for mode, c in cards) + '.'
    return out + (''.join(f'\n- {x}' for x in failed) if failed else '')


def render(paths: list[Path]) -> str:
    by = collections.defaultdict(list)
    for p in paths:
        r = json.loads(p.read_text())
        by[r['bench']].append(r)
    out = []
    for bench, rs in sorted(by.items()):
        rs.sort(key=lambda r: ('code_under_test' not in r, ORDER.index(r['mode']) if r['mode'] in ORDER else 99))
        out.append(f'**{bench}.py**\n\n' + {'turns': turns_tables, 'latency': latency_table, 'interruptions': interruptions_table, 'callers': callers_table,
                                            'capacity': capacity_table}[bench](rs))
        out.append('Measured ' + '; '.join(f"{SHORT[r['mode']]} {r['date'][:10]} at "
                                            f"{r['code_under_test'][:7] if 'code_under_test' in r else r['code']['commit'][:8]}{' (with changes)' if r['code']['dirty'] and 'code_under_test' not in r else ''}, "
                                            f"load {r['load_avg'][0]:.1f}" + (f" on {r['cores']} cores" if isinstance(r['cores'], int) else ', server on one core')
                                            for r in rs) + '.')
    return '\n\n'.join(out)


if __name__ == '__main__':
    files = [Path(a) for a in sys.argv[1:]] or sorted(RESULTS.glob('*.json'))
    if files and all(f.name.startswith('eval-') for f in files):
        sys.exit(print(eval_table([(f.stem.removeprefix('eval-'), json.loads(f.read_text())) for f in files])))
    print(render([f for f in files if f.name.split('-')[0].removesuffix('.json') in ('turns', 'latency', 'interruptions', 'callers', 'capacity')]))
