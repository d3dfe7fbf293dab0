"""README.md made from nbs/index.ipynb (settings.ini's `readme_nb`) without Quarto: the notebook's
markdown as it is, its shown code as Python blocks (cells marked `#| hide` or `#| echo: false`, which
the docs site shows as a figure only, are left out). `--check` fails when README.md differs.
"""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parents[1]


def readme(nb_path: Path = root / 'nbs' / 'index.ipynb') -> str:
    "The README's text."
    parts = []
    for c in json.loads(nb_path.read_text(encoding='utf-8'))['cells']:
        src = ''.join(c['source']).strip()
        if c['cell_type'] == 'markdown': parts.append(src)
        elif c['cell_type'] == 'code':
            flags = [f.strip() for f in re.findall(r'^#\|(.*)$', src, re.M)]
            if any(f == 'hide' or f.replace(' ', '') in ('echo:false', 'include:false') for f in flags): continue
            code = '\n'.join(l for l in src.splitlines() if not l.startswith('#|')).strip()
            if code: parts.append(f'```python\n{code}\n```')
    text = '\n\n'.join(p for p in parts if p) + '\n'
    return re.sub(r'\A(# [^\n]+\n\n)> ([^\n]+)\n', r'\1\2\n', text)  # nbdev's "> summary" line as the first paragraph


if __name__ == '__main__':
    want, path = readme(), root / 'README.md'
    if '--check' in sys.argv[1:]:
        if path.read_text(encoding='utf-8') != want:
            sys.exit('README.md differs from nbs/index.ipynb, its source: edit the notebook, then `make readme`')
        print('README.md made from nbs/index.ipynb')
    else:
        path.write_text(want, encoding='utf-8')
        print(f'wrote {path.relative_to(root)} from nbs/index.ipynb')
