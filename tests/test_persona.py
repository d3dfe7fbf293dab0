"Tests for artist_hotline.persona: the default persona, TOML loading and its errors, and the bounded conversation memory."
import os, re
from pathlib import Path
import pytest
from artist_hotline.persona import (DEFAULT_PERSONA, DEFAULT_PERSONA_TOML, INTERRUPTED, Memory, Persona, PersonaError, ScriptRule,
                                    VoiceSettings, list_personas, load_persona, parse_persona, persona_dirs)

MINI = 'name = "Ada"\nsystem_prompt = "You are Ada."\ngreeting = "Hello, Ada here."\n'


@pytest.fixture
def jason(): return load_persona()


@pytest.fixture
def pdir(tmp_path):
    (tmp_path / 'ada.toml').write_text(MINI)
    (tmp_path / 'broken.toml').write_text('name = "Broken"\nsystem_prompt = "x"\n')
    return tmp_path


# --- the default persona

def test_default_is_synthetic_jason(jason):
    assert jason.name == 'Synthetic Jason'
    assert isinstance(jason.voice, VoiceSettings) and all(isinstance(r, ScriptRule) for r in jason.script)
    assert len(jason.script) >= 15 and len(jason.small_talk) >= 5 and len(jason.fallback_lines) >= 2
    for text in (jason.greeting, jason.reprompt, jason.goodbye, jason.busy, jason.recording_notice): assert text.strip()
    assert 'one to three' in jason.system_prompt and INTERRUPTED in jason.system_prompt


def test_default_parses_the_same_as_a_file(tmp_path, jason):
    (tmp_path / 'copy.toml').write_text(DEFAULT_PERSONA_TOML)
    copy = load_persona('copy', dirs=[tmp_path])
    assert (copy.name, copy.system_prompt, copy.script, copy.voice) == (jason.name, jason.system_prompt, jason.script, jason.voice)


def test_default_lines_are_speakable(jason):
    spoken = [jason.greeting, jason.reprompt, jason.goodbye, jason.busy, jason.recording_notice,
              *jason.fallback_lines, *jason.small_talk, *(r.reply for r in jason.script)]
    for s in spoken:
        assert not re.search(r'[*#_`\[\]<>]|[\U0001F000-\U0001FAFF\u2600-\u27BF]', s), s
        assert len(re.findall(r'[.!?](?:\s|$)', s)) <= 3, s
        assert len(s.split()) <= 30, s


def test_script_keywords_are_clean(jason):
    for r in jason.script:
        assert r.keywords and (r.reply or r.tool)
        assert all(k == k.lower().strip() and k for k in r.keywords)


def first_rule(persona, said):
    "The index of the first rule with a keyword in `said`, as the offline brain matches (whole words, first wins)."
    return next((i for i, r in enumerate(persona.script)
                 if any(re.search(rf'\b{re.escape(k)}\b', said) for k in r.keywords)), None)


@pytest.mark.parametrize('said,word', [
    ('okay thanks bye', 'talking with you'), ('goodbye', 'Bye for now'), ('who is this', 'Synthetic Jason'),
    ('are you a robot', 'Synthetic Jason'), ('is this being recorded', 'recorded'), ('how are you', 'How are you doing'),
    ('where are you', 'studio'), ("what's your favorite color", 'Cadmium'), ('what is your favourite colour', 'Cadmium'),
    ("i'm stuck", 'smallest possible'), ('where do you get your inspiration', 'ordinary things'),
    ('i have an idea', 'going'), ('what do you think about ai', 'machines'), ('what are you working on', 'layering'),
    ('do you paint', 'Painting'), ('what kind of music do you like', 'Sound'), ('how is the weather', 'window'),
    ('tell me a joke', 'bar'), ('i love art', 'attention'), ('okay thanks', 'welcome'),
    ('can i see your paintings', 'Painting'), ('i see you like painting', 'Painting'),
])
def test_questions_reach_their_rule(jason, said, word):
    i = first_rule(jason, said)
    assert i is not None and word in jason.script[i].reply


def test_nothing_matches_small_talk_instead(jason):
    assert first_rule(jason, 'my cat is called biscuit') is None


def test_voice_settings_for_elevenlabs(jason):
    s = jason.voice.elevenlabs_settings()
    assert set(s) == {'stability', 'similarity_boost', 'style', 'use_speaker_boost', 'speed'}
    assert 0 <= s['stability'] <= 1 and 0.7 <= s['speed'] <= 1.2


# --- reading personas

def test_parse_minimal_fills_defaults():
    p = parse_persona(MINI, 'ada.toml')
    assert p == Persona('Ada', 'You are Ada.', 'Hello, Ada here.', source='ada.toml')


def test_parse_full():
    p = parse_persona(MINI + '''
fallback_lines = ["Sorry?"]
small_talk = ["Go on."]
reprompt = "Still there?"
[voice]
voice_id = "abc"
stability = 0.2
speed = 1.1
espeak_rate = 140
use_speaker_boost = false
openai_voice = "nova"
[[script]]
keywords = ["Loom", " weaving "]
reply = "The loom is my computer."
''')
    assert p.voice == VoiceSettings(voice_id='abc', stability=0.2, speed=1.1, espeak_rate=140, use_speaker_boost=False, openai_voice='nova')
    assert p.script == [ScriptRule(['loom', 'weaving'], 'The loom is my computer.')]
    assert (p.fallback_lines, p.small_talk, p.reprompt) == (['Sorry?'], ['Go on.'], 'Still there?')


@pytest.mark.parametrize('extra,message', [
    ('greting = "x"', "unknown field 'greting'"),
    ('reprompt = 3', "field 'reprompt' must be a non-empty string"),
    ('small_talk = []', "field 'small_talk' must be a non-empty list of strings"),
    ('small_talk = ["ok", 2]', "field 'small_talk[1]'"),
    ('voice = "loud"', "field 'voice' must be a table"),
    ('[voice]\nstability = 1.5', "field 'voice.stability' must be a number from 0 to 1"),
    ('[voice]\nspeed = 2', "field 'voice.speed' must be a number from 0.7 to 1.2"),
    ('[voice]\nespeak_rate = 150.5', "field 'voice.espeak_rate' must be an integer"),
    ('[voice]\nstability = true', "field 'voice.stability'"),
    ('[voice]\nuse_speaker_boost = "yes"', "field 'voice.use_speaker_boost' must be true or false"),
    ('[voice]\nvoice = "x"', "unknown field 'voice.voice'"),
    ('[[script]]\nkeywords = ["a"]', "missing required field 'script[0].reply'"),
    ('[[script]]\nkeywords = []\nreply = "x"', "field 'script[0].keywords' must be a non-empty list"),
    ('[[script]]\nkeywords = ["a"]\nreply = "x"\nanswer = "y"', "unknown field 'script[0].answer'"),
    ('script = "x"', "field 'script' must be an array of tables"),
])
def test_parse_errors_name_file_and_field(extra, message):
    with pytest.raises(PersonaError, match=re.escape(message)) as e: parse_persona(MINI + extra + '\n', 'p/ada.toml')
    assert str(e.value).startswith('p/ada.toml: ')


@pytest.mark.parametrize('missing', ['name', 'system_prompt', 'greeting'])
def test_missing_required_field(missing):
    text = '\n'.join(l for l in MINI.splitlines() if not l.startswith(missing + ' '))
    with pytest.raises(PersonaError, match=f"x.toml: missing required field '{missing}'"): parse_persona(text, 'x.toml')


def test_invalid_toml():
    with pytest.raises(PersonaError, match='x.toml: not valid TOML'): parse_persona('name = "unclosed\n', 'x.toml')


def test_persona_error_is_a_value_error():
    assert issubclass(PersonaError, ValueError)


# --- finding personas

def test_load_default_without_files(tmp_path):
    assert load_persona(dirs=[tmp_path]).name == 'Synthetic Jason'
    assert load_persona('Synthetic Jason', dirs=[tmp_path]).name == 'Synthetic Jason'
    assert load_persona(DEFAULT_PERSONA, dirs=[]).name == 'Synthetic Jason'


def test_load_by_name_and_path(pdir):
    assert load_persona('ada', dirs=[pdir]).greeting == 'Hello, Ada here.'
    assert load_persona('ADA', dirs=[pdir]).source == str(pdir / 'ada.toml')
    assert load_persona(pdir / 'ada.toml').name == 'Ada'
    assert load_persona(str(pdir / 'ada.toml')).name == 'Ada'


def test_file_replaces_builtin(pdir):
    (pdir / 'synthetic-jason.toml').write_text(MINI)
    assert load_persona(dirs=[pdir]).name == 'Ada'


def test_earlier_dir_wins(tmp_path):
    a, b = tmp_path / 'a', tmp_path / 'b'
    a.mkdir(), b.mkdir()
    (a / 'x.toml').write_text(MINI)
    (b / 'x.toml').write_text(MINI.replace('Ada', 'Bea'))
    assert load_persona('x', dirs=[a, b]).name == 'Ada'
    assert load_persona('x', dirs=[b, a]).name == 'Bea'


def test_bad_file_error_names_file_and_field(pdir):
    with pytest.raises(PersonaError, match=r"broken\.toml: missing required field 'greeting'"): load_persona('broken', dirs=[pdir])


def test_unknown_name_lists_available(pdir):
    with pytest.raises(PersonaError, match='available: synthetic-jason, ada, broken'): load_persona('zed', dirs=[pdir])


def test_missing_path(tmp_path):
    with pytest.raises(PersonaError, match='persona file not found'): load_persona(tmp_path / 'nope.toml')


def test_list_personas(pdir, tmp_path):
    assert list_personas([pdir]) == ['synthetic-jason', 'ada', 'broken']
    assert list_personas([tmp_path / 'missing']) == ['synthetic-jason']


def test_personas_dir_setting(pdir, tmp_path):
    assert persona_dirs(f'{pdir}{os.pathsep}{tmp_path}') == [pdir, tmp_path]
    assert load_persona('ada', dirs=persona_dirs(str(pdir))).name == 'Ada'
    assert 'ada' in list_personas(persona_dirs(str(pdir)))


def test_default_dir_is_cwd_personas(monkeypatch, tmp_path):
    work = tmp_path / 'work'
    (work / 'personas').mkdir(parents=True)
    (work / 'personas' / 'ada.toml').write_text(MINI)
    monkeypatch.chdir(work)
    assert persona_dirs() == [Path('personas')]
    assert load_persona('ada').name == 'Ada'


# --- memory

def test_greeting_once(jason):
    m = Memory(jason)
    assert m.greeting() == jason.greeting and m.greeted
    assert m.greeting() is None
    assert m.messages()[1:] == [dict(role='assistant', content=jason.greeting)]


def test_messages_order_and_format(jason):
    m = Memory(jason)
    m.greeting()
    m.add_user('  hello  ')
    m.add_assistant('Hi! What do you make?')
    m.add_user('I paint')
    msgs = m.messages()
    assert msgs == [dict(role='system', content=jason.system_prompt), dict(role='assistant', content=jason.greeting),
                    dict(role='user', content='hello'), dict(role='assistant', content='Hi! What do you make?'),
                    dict(role='user', content='I paint')]
    msgs[2]['content'] = 'changed'
    assert m.history[1]['content'] == 'hello'


def test_caller_summary_in_system_prompt(jason):
    msgs = Memory(jason, caller_summary='they like blue').messages()
    assert msgs[0]['content'] == jason.system_prompt + '\n\nYou spoke with this caller before: they like blue'
    assert Memory(jason, caller_summary='').messages()[0]['content'] == jason.system_prompt


def test_blank_text_is_ignored(jason):
    m = Memory(jason)
    m.add_user('  ')
    m.add_assistant('')
    m.add_assistant(None, interrupted=True)
    assert m.history == []


def test_interrupted_reply_is_marked(jason):
    m = Memory(jason)
    m.add_user('hi')
    m.add_assistant('Well, the thing about painting is ', interrupted=True)
    assert m.messages()[-1] == dict(role='assistant', content='Well, the thing about painting is' + INTERRUPTED)
    assert INTERRUPTED == '—'


def test_cut_off_rewrites_last_reply(jason):
    m = Memory(jason)
    m.greeting()
    m.cut_off('Hey, this is Synthetic Jason!')
    assert m.history == [dict(role='assistant', content='Hey, this is Synthetic Jason!—')]
    m.add_user('hi')
    m.cut_off('')
    assert m.history == [dict(role='user', content='hi')]
    m.cut_off('nothing to cut')
    assert m.history == [dict(role='user', content='hi')]


def talk(jason, turns, **kw):
    m = Memory(jason, **kw)
    m.greeting()
    for i in range(turns):
        m.add_user(f'question {i}')
        m.add_assistant(f'answer {i}')
    return m


def test_max_turns_keeps_newest(jason):
    m = talk(jason, 10, max_turns=3)
    m.add_user('last question')
    msgs = m.messages()
    assert msgs[0]['role'] == 'system'
    assert [x['content'] for x in msgs[1:]] == ['question 8', 'answer 8', 'question 9', 'answer 9', 'last question']
    assert len(m.history) == 22


def test_max_chars_drops_oldest_and_starts_with_user(jason):
    m = talk(jason, 10, max_chars=50)
    msgs = m.messages()
    assert msgs[1]['role'] == 'user'
    assert sum(len(x['content']) for x in msgs[1:]) <= 50
    assert msgs[-1]['content'] == 'answer 9'


def test_newest_turn_always_sent(jason):
    m = talk(jason, 2, max_chars=10, max_turns=1)
    m.add_user('x' * 500)
    assert m.messages()[1:] == [dict(role='user', content='x' * 500)]


def test_greeting_kept_while_everything_fits(jason):
    m = talk(jason, 3)
    assert m.messages()[1] == dict(role='assistant', content=jason.greeting)
    assert len(m.messages()) == 1 + 1 + 6


def test_consecutive_user_turns(jason):
    m = Memory(jason, max_turns=2)
    for s in ('one', 'two', 'three'): m.add_user(s)
    assert [x['content'] for x in m.messages()[1:]] == ['two', 'three']


def test_last_topics(jason):
    m = Memory(jason)
    for s in ('yes', 'I paint birds in watercolour', 'okay', 'what colour is the sea', 'no', 'tell me about sound art'):
        m.add_user(s)
        m.add_assistant('mm')
    assert m.last_topics(2) == 'what colour is the sea; tell me about sound art'
    assert m.last_topics() == 'I paint birds in watercolour; what colour is the sea; tell me about sound art'
    assert m.last_topics(1, min_words=1) == 'tell me about sound art'
    assert m.last_topics(0) == ''
    assert Memory(jason).last_topics() == ''
