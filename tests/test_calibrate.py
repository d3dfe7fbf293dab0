"Calibration: label readers, measurements, calibrate() and the corpus report."
import math

import numpy as np
import pandas as pd
import pytest

from artist_hotline.audio import SAMPLE_RATE
from artist_hotline.calibrate import *
from artist_hotline.settings import TurnSettings
from artist_hotline.vad import DEFAULT_HANGOVER_MS, DEFAULT_MIN_SPEECH_MS, DEFAULT_VOICING, DEFAULT_WEBRTC_MODE, WebRtcVAD, turn_vad


def test_read_lab_boundaries_and_regions(tmp_path):
    (tmp_path / 'a.lab').write_text('0.25 0.25 speech\n3.5 3.5 silence\n')
    (tmp_path / 'b.lab').write_text('0.1\t0.4\tspeech\n0.4\t0.9\tsil\n1.0\t1.5\thello\n')
    (tmp_path / 'c.lab').write_text('0.5 0.5 speech\n')
    assert read_lab(tmp_path / 'a.lab') == [(0.25, 3.5)]
    assert read_lab(tmp_path / 'b.lab') == [(0.1, 0.4), (1.0, 1.5)]
    assert read_lab(tmp_path / 'c.lab') == [(0.5, math.inf)]


def test_read_rttm_union_and_words(tmp_path):
    (tmp_path / 'm.rttm').write_text('SPEAKER a 1 0.0 1.0 <NA> <NA> A <NA> <NA>\n'
                                     'SPEAKER a 1 0.5 1.0 <NA> <NA> B <NA> <NA>\n'
                                     'SPEAKER zz 1 3.0 1.0 <NA> <NA> A <NA> <NA>\n'
                                     'SPEAKER a 1 2.0 0.5 <NA> <NA> A <NA> <NA>\n')
    assert read_rttm(tmp_path / 'm.rttm', 'a') == [(0.0, 1.5), (2.0, 2.5)]
    assert read_rttm(tmp_path / 'm.rttm', 'b') == []
    (tmp_path / 'w.json').write_text('{"w":[{"b":0.0,"d":0.2,"t":"<sil>"},{"b":0.2,"d":0.3,"t":"hi(2)"}]}')
    assert read_words(tmp_path / 'w.json') == [(0.2, 0.5)]


def test_span_mask_uses_frame_centres():
    assert span_mask([(0.02, 0.06)], 5).astype(int).tolist() == [0, 1, 1, 0, 0]
    assert span_mask([], 3).tolist() == [False] * 3


def test_find_labels_on_corpus(corpus):
    lib = sorted((corpus / 'librivox').glob('*.wav'))[0]
    speech, words, kind = find_labels(lib)
    assert kind == 'lab' and len(speech) == 1 and len(words) > 10
    speech, _, kind = find_labels(corpus / 'ami/dev00.wav')
    assert kind == 'rttm' and speech[0][0] == pytest.approx(1.44)
    assert find_labels(corpus / 'noise/exercise_bike.wav') == ([], None, None)


def test_load_recording_pads_speech_only(corpus):
    lib = load_recording(sorted((corpus / 'librivox').glob('*.wav'))[0])
    assert lib.group == 'librivox' and lib.utterances and lib.pcm[-2 * SAMPLE_RATE:].max() == 0
    noise = load_recording(corpus / 'noise/exercise_bike.wav')
    assert noise.speech == [] and len(noise.pcm) == len(phone_signal(corpus / 'noise/exercise_bike.wav'))
    assert not load_recording(corpus / 'ami/tst00.wav').utterances


def test_phone_signal_is_cached_and_8k(corpus):
    a = phone_signal(corpus / 'misc/jfk.wav')
    assert a is phone_signal(corpus / 'misc/jfk.wav') and a.dtype == np.int16
    assert len(a) == pytest.approx(11.0 * SAMPLE_RATE, abs=2)


def test_decisions_from_features_equal_the_detector(corpus):
    sig = load_recording(corpus / 'ami/dev00.wav').pcm
    f = features(sig)
    for th in [setting(), PROTOTYPE, setting('webrtc', 3, voicing=None), setting('energy', energy_db=-45, voicing=0.75)]:
        assert (decisions(th, f) == turn_vad(th).decide(sig)).all(), th


def test_measure_counts_a_false_turn_in_noise():
    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    buzz = (np.sign(np.sin(2 * np.pi * 150 * t)) * 8000 + rng.normal(0, 500, len(t))).astype(np.int16)  # voiced, loud
    rec = Recording('buzz', 'noise', np.r_[buzz, np.zeros(SAMPLE_RATE, np.int16)], speech=[])
    m = measure(rec, setting('energy', voicing=None))
    assert m['false_turns'] == 1 and m['quiet_s'] == pytest.approx(2.0) and m['one_turn'] is None
    s = summarise([m])
    assert s['false_per_min'] == pytest.approx(30.0) and s['false_share'] == pytest.approx(0.5, abs=0.02)


def test_measure_latency_and_one_turn():
    speech = np.r_[np.zeros(SAMPLE_RATE, np.int16), (np.sign(np.sin(2 * np.pi * 150 * np.arange(8000) / 8000)) * 8000).astype(np.int16),
                   np.zeros(2 * SAMPLE_RATE, np.int16)]
    rec = Recording('tone', 'synthetic', speech, speech=[(1.0, 2.0)])
    m = measure(rec, setting('energy', voicing=None, hangover_ms=400))
    assert m['one_turn'] and m['false_turns'] == 0 and m['missed'] == 0
    assert m['latencies'] == [pytest.approx(0.4)]
    assert m['ttp'] == 50 and m['tfp'] == 0


def test_default_grid_starts_with_the_prototype():
    g = default_grid()
    assert g[0] == PROTOTYPE and PROTOTYPE.hangover_ms == 2000 and len(g) == len(set(map(repr, g)))
    assert TurnSettings() in g  # the defaults were among the candidates


def test_setting_is_the_turn_part_of_the_settings_tree():
    th = setting()
    assert th == TurnSettings() and isinstance(turn_vad(th), WebRtcVAD)
    assert (th.hangover_ms, th.min_speech_ms, th.detector.webrtc_mode, th.voicing.threshold) == (DEFAULT_HANGOVER_MS, DEFAULT_MIN_SPEECH_MS,
                                                                                               DEFAULT_WEBRTC_MODE, DEFAULT_VOICING)
    assert turn_vad(setting('energy', energy_db=-40, voicing=None)).threshold_db == -40
    assert turn_vad(setting('energy', voicing=None)).voicing is None


def test_calibrate_returns_sane_thresholds(corpus):
    recs = corpus_recordings(corpus)
    pick = [r for r in recs if r.group == 'librivox'] + [r for r in recs if r.group == 'fsdd'][::6] + \
           [r for r in recs if r.group.startswith('noise')]
    c = calibrate(pick, progress=False)
    th = c.turn
    assert 300 <= th.hangover_ms <= 500 and 60 <= th.min_speech_ms <= 150
    assert th.gated  # without the gate the noise files produce false turns
    m = c.metrics
    assert m['all']['false_per_min'] <= 1.0 and m['all']['latency_p90'] <= 0.6 and m['all']['missed'] == 0
    assert m['noise:doing_the_dishes']['false_per_min'] == 0 and m['librivox']['f1_turn'] >= 0.9
    assert c.meets_goals == (c.missed == [])


def test_calibrate_on_files_with_sibling_labels(corpus):
    files = sorted((corpus / 'librivox').glob('*.wav')) + [corpus / 'noise/exercise_bike.wav']
    c = calibrate(files, grid=[PROTOTYPE, setting(voicing=None), setting()], progress=False)
    assert c.turn == TurnSettings() and c.meets_goals, c.missed
    with pytest.raises(ValueError): calibrate([])


def test_calibrate_report_writes_table_and_plots(corpus, tmp_path, capsys):
    grid = [PROTOTYPE, setting(voicing=None), setting(), setting('energy', voicing=None, hangover_ms=400)]
    report = calibrate_report(corpus, tmp_path, grid=grid, progress=False).summary
    assert isinstance(report, pd.DataFrame) and report.role.iloc[0] == 'prototype'
    assert 'chosen' in report.role.values
    for name in ('levels.png', 'frame_pr.png', 'tradeoff.png', 'calibration_grid.csv', 'calibration_summary.csv', 'recordings.csv'):
        assert (tmp_path / name).stat().st_size > 1000, name
    assert 'chosen:' in capsys.readouterr().out
    proto = report.set_index('role').loc['prototype']
    assert proto['end s median librivox'] > 1.5  # the 2 s timer: answers come late


def test_full_grid_chooses_the_defaults(corpus, tmp_path):
    "The constants in artist_hotline.vad are what the calibration chooses on the corpus."
    rep = calibrate_report(corpus, tmp_path, progress=False, show=False)
    report = rep.summary.set_index('role')
    chosen = report.loc['chosen']
    assert rep.chosen.turn == TurnSettings() and chosen['detector'] == TurnSettings().label
    assert (chosen['hangover ms'], chosen['min speech ms']) == (DEFAULT_HANGOVER_MS, DEFAULT_MIN_SPEECH_MS)
    assert chosen['false/min doing_the_dishes'] == 0 and chosen['false/min exercise_bike'] == 0
    assert chosen['one turn fsdd'] == 1.0 and chosen['end s p90 librivox'] <= 0.6 and chosen['end s p90 fsdd'] <= 0.6
