"The docs site's configuration (nbdev's, for Quarto on GitHub) and the README made from the home page notebook."
import shutil, subprocess, sys
from configparser import ConfigParser
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def sidebar_notebooks(node) -> list[str]:
    "Every notebook the sidebar lists, in order."
    if isinstance(node, str): return [node]
    if isinstance(node, list): return [n for x in node for n in sidebar_notebooks(x)]
    if isinstance(node, dict): return sidebar_notebooks(node.get('contents', []))
    return []


def test_the_sidebar_lists_every_notebook_once():
    side = yaml.safe_load((ROOT / 'nbs/sidebar.yml').read_text())['website']['sidebar']['contents']
    listed = sidebar_notebooks(side)
    assert sorted(listed) == sorted(p.name for p in (ROOT / 'nbs').glob('*.ipynb')) and len(listed) == len(set(listed))
    assert listed[0] == 'index.ipynb'
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini')
    assert cfg['DEFAULT']['custom_sidebar'] == 'True'  # nbdev_docs keeps this sidebar rather than writing its own


def test_the_quarto_configuration_is_nbdevs():
    q = yaml.safe_load((ROOT / 'nbs/_quarto.yml').read_text())
    assert q['project']['type'] == 'website' and q['format']['html']['css'] == 'styles.css'
    assert all((ROOT / 'nbs' / f).is_file() for f in q['metadata-files'] + ['styles.css'])
    site = yaml.safe_load((ROOT / 'nbs/nbdev.yml').read_text())['website']
    assert site['title'] == 'artist-hotline' and site['repo-branch'] == 'main'


def test_the_github_workflows_test_and_deploy():
    test = yaml.safe_load((ROOT / '.github/workflows/test.yaml').read_text())
    steps = test['jobs']['test']['steps']
    assert any(s.get('run') == 'make test' for s in steps) and 'postgres' in test['jobs']['test']['services']
    deploy = yaml.safe_load((ROOT / '.github/workflows/deploy.yaml').read_text())
    assert deploy['jobs']['deploy']['steps'] == [{'uses': 'fastai/workflows/quarto-ghp@master'}]


def test_the_readme_is_made_from_the_home_page(tmp_path):
    run = lambda root, *a: subprocess.run([sys.executable, str(root / '.ci/readme.py'), *a], capture_output=True, text=True)
    assert run(ROOT, '--check').returncode == 0
    for f in ('.ci/readme.py', 'nbs/index.ipynb', 'README.md'):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True); shutil.copy(ROOT / f, tmp_path / f)
    (tmp_path / 'README.md').write_text((ROOT / 'README.md').read_text() + '\nAn edit made to the README, not the notebook.\n')
    bad = run(tmp_path, '--check')
    assert bad.returncode == 1 and 'differs from nbs/index.ipynb' in bad.stderr
    assert run(tmp_path).returncode == 0 and (tmp_path / 'README.md').read_text() == (ROOT / 'README.md').read_text()
    text = (ROOT / 'README.md').read_text()
    assert text.startswith('# artist-hotline\n\nA phone line') and 'make demo' in text.split('\n\n', 3)[2]


def test_github_ci_requires_the_browser_tests():
    "On GitHub the page and search tests run (the runner has Chrome): a missing browser fails them rather than skipping them."
    steps = yaml.safe_load((ROOT / '.github/workflows/test.yaml').read_text())['jobs']['test']['steps']
    make = next(s for s in steps if s.get('run') == 'make test')
    assert make['env'].get('REQUIRE_BROWSER') == '1' and not any('|| true' in s.get('run', '') for s in steps)
