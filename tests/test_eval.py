"Tests of artist_hotline.evaluate: scenario files and their errors, the line, the judge's path, and a tiny run that must fail on a wrong expectation."
import json, textwrap
from pathlib import Path

import numpy as np
import pytest

from artist_hotline.cli import main
from artist_hotline.evaluate import (STARTER, Check, Expect, Hotline, Impairments, Line, ScenarioError, TurnResult, TurnSpec, check_turn,
                                     judge_call, load_scenario, load_scenarios, run_scenario)


def write(folder: Path, name: str, text: str) -> Path:
    p = folder / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


BAD = [  # (file text, the line, what the error says)
    ('turns:\n  - say: Hi\n    sey: Hi\n', 3, "unknown key 'sey' in a turn"),
    ('turns:\n  - say: Hi\n    expect:\n      mention: [x]\n', 4, "unknown key 'mention' in expect"),
    ('name: x\ncolour: red\nturns: [say: Hi]\n', 2, "unknown key 'colour' in the scenario"),
    ('line:\n  loss: 0.1\n  jiter_ms: 100\nturns: [say: Hi]\n', 3, "unknown key 'jiter_ms' in line"),
    ('turns:\n  - wav: missing.wav\n', 2, "wav 'missing.wav' not found"),
    ('line: {noise: missing-noise.wav}\nturns: [say: Hi]\n', 1, "noise 'missing-noise.wav' not found"),
    ('caller: {voice: piper:amy}\nturns: [say: Hi]\n', 1, "no Piper voice 'amy'"),
    ('turns:\n  - say: Hi\n    voice: espeak:no-such-voice\n', 3, "eSpeak NG has no voice 'no-such-voice'"),
    ('caller:\n  voice: fsdd:alice\nturns: [say: one]\n', 2, "no corpus speaker 'alice'"),
    ('caller: {voice: nemo:joe}\nturns: [say: Hi]\n', 1, "unknown voice engine 'nemo'"),
    ('turns:\n  - say: Hi\n    pause_s: soon\n', 3, "pause_s must be a number, got 'soon'"),
    ('turns:\n  - say: Hi\n  - say: [Hi, 3]\n', 3, 'say: each piece is a text or {pause: seconds}'),
    ('turns:\n  - say: Hi\n    say: Ho\n', 3, "key 'say' given twice"),
    ('turns:\n  - say: [Hi\n', 3, 'not valid YAML'),
    ('turns: nothing\n', 1, 'turns: must be a list of at least one turn'),
    ('turns:\n  - say: Hi\n    words_end_s: 1\n', 3, 'words_end_s needs a wav'),
]


@pytest.mark.parametrize('text,line,says', BAD, ids=[b[2][:30] for b in BAD])
def test_a_bad_scenario_names_its_file_and_line(tmp_path, text, line, says):
    p = write(tmp_path, 'bad.yaml', text)
    with pytest.raises(ScenarioError) as e: load_scenario(p, corpus=None)
    assert (e.value.path, e.value.line) == (str(p), line)
    assert str(e.value).startswith(f'{p}:{line}: ') and says in str(e.value)


def test_folders_names_and_the_starter_set(tmp_path):
    with pytest.raises(ScenarioError, match='no such file or folder'): load_scenarios([tmp_path / 'nowhere'])
    write(tmp_path, 'a.yaml', 'name: same\nturns: [say: Hi]\n'); write(tmp_path, 'b.yml', 'name: same\nturns: [say: Ho]\n')
    with pytest.raises(ScenarioError, match="scenario name 'same' is also used by"): load_scenarios([tmp_path])
    starter = load_scenarios([STARTER], corpus=None)  # read and checked whether the corpus is here or not
    assert len(starter) >= 20 and len({s.caller_kind for s in starter}) >= 6


def test_the_line_loses_in_runs_and_holds_up_in_bursts():
    im = Impairments(Line(loss=0.05, loss_burst=2), seed=3)
    lost = np.array([im.lost() for _ in range(40000)])
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, lost.astype(int), 0])))[::2]
    assert abs(lost.mean() - 0.05) < 0.01 and abs(runs.mean() - 2) < 0.3
    im, held, t = Impairments(Line(jitter_ms=100, jitter_rate=0.1), seed=3), [False], 0
    for _ in range(2000): held.append(im.held(t, held[-1])); t += 160
    spans = np.diff(np.flatnonzero(np.diff(np.r_[0, np.array(held, int), 0])))[::2]
    assert 0 < spans.max() <= 5  # 100 ms: at most five 20 ms messages held at once
    assert Impairments(Line()).lost() is False


def test_a_tool_is_checked_against_the_record():
    spec = TurnSpec(1, say=['Leave a message'], expect=Expect(tool='take_message'))
    c, = check_turn(spec, TurnResult(1, 'Leave a message'))
    assert c == Check("tool 'take_message'", None, 'not checkable: no record of the hotline (give its CALLS_UI_TOKEN)', 1)
    assert check_turn(spec, TurnResult(1, 'Leave a message', tools=['take_message']))[0].ok is True
    c, = check_turn(spec, TurnResult(1, 'Leave a message', tools=['text_link']))
    assert c.ok is False and c.detail == "tools used: ['text_link']"


async def test_a_scenario_that_needs_the_corpus_skips_without_it(tmp_path):
    sc = load_scenario(write(tmp_path, 'c.yaml', 'turns:\n  - wav: corpus:misc/jfk.wav\n    text: And so\n'), corpus=None)
    r = await run_scenario(sc, Hotline('http://127.0.0.1:9'), corpus=None)  # skipped before any call
    assert r.status == 'skipped' and r.note.startswith('needs the corpus (corpus:misc/jfk.wav)')


async def test_the_judge_asks_in_the_schema_and_the_fake_cloud_answers():
    from artist_hotline.fakecloud import running_fake_cloud
    from artist_hotline.wire import HttpOpenAIChat
    async with running_fake_cloud(profile='instant') as fc:
        judge = HttpOpenAIChat('gpt-4o-mini', 'sk-test', fc.openai_base_url)
        verdicts = await judge_call(judge, [('caller', 'Who are you?'), ('persona', "I'm Synthetic Jason.")], ['In character?', 'Answered?'])
        await judge.aclose()
        assert fc.journal.last('chat')['response_format']['json_schema']['name'] == 'eval_judge'
    assert [ok for ok, _ in verdicts] == [True, True]


def test_a_wrong_expectation_fails_the_run_naming_the_turn(tmp_path, capsys):
    "The offline hotline, two callers at once: one as expected, one whose expectation is wrong; exit status 1 and why."
    write(tmp_path, 'hello.yaml', '''
        caller: {voice: piper:joe, pitch: 1.1}
        turns:
          - say: Hello, who am I talking to?
            wait_s: 90  # how soon it replies is not this test's question: on a busy machine it took over 10 s
            expect: {heard_wer: 0.25, mentions: [jason]}
        ''')
    write(tmp_path, 'wrong.yaml', '''
        caller: {voice: piper:joe}
        turns:
          - say: Hello, who am I talking to?
            wait_s: 90
            expect: {mentions: [banana]}
        ''')
    assert main(['eval', str(tmp_path), '--speed', '0', '--out', str(tmp_path / 'out')]) == 1
    out, err = capsys.readouterr()
    assert "FAIL wrong turn 1 (Hello, who am I talking to?): mentions 'banana': reply: \"I'm Synthetic Jason" in out
    assert '1 of 2 scenarios did not pass: wrong' in err
    card = json.loads((tmp_path / 'out' / 'scorecard.json').read_text())
    assert [(s['name'], s['status']) for s in card['scenarios']] == [('hello', 'passed'), ('wrong', 'failed')]
    assert card['kinds'][0]['kind'] == 'piper joe shifted · clean' and card['scenarios'][0]['turns'][0]['wer'] == 0
    assert (tmp_path / 'out' / 'calls' / 'hello.wav').exists()


def test_the_cloud_path_on_the_fake_cloud_with_its_judge(tmp_path, capsys):
    "`--cloud`: the hotline's cloud adapters and the LLM judge, both against the fake cloud."
    write(tmp_path, 'hello.yaml', '''
        caller: {voice: piper:joe, pitch: 1.1}
        expect:
          judge: ["Did the persona say who it is?"]
        turns:
          - say: Hello, who am I talking to?
            expect: {heard_wer: 0.25, mentions: [jason]}
        ''')
    assert main(['eval', str(tmp_path / 'hello.yaml'), '--cloud', '--profile', 'instant', '--speed', '0', '--out', str(tmp_path / 'out')]) == 0
    card = json.loads((tmp_path / 'out' / 'scorecard.json').read_text())
    assert card['meta']['engines']['llm'].startswith('openai:') and card['meta']['judge'] == 'openai:gpt-4o-mini'
    judged, = [c for c in card['scenarios'][0]['checks'] if c['what'].startswith('judge')]
    assert judged['ok'] is True and 'fake cloud' in judged['detail']
