"""The docs site without Quarto, into _docs/: nbdev's own processing of every notebook (the `FilterDefaults`
processors nbdev_docs runs: frontmatter, show_doc for every exported name, hidden and exported cells, links
to documented names), then nbconvert's HTML export of each processed notebook, each show_doc with its
parameter table, in a page with the sidebar of nbs/sidebar.yml, a table of contents of the page's h2/h3
headings, and a search box: Pagefind (the `pagefind[bin]` package) indexes the built pages.

`make docs` builds it; open _docs/index.html (search needs the site served over http, as GitHub Pages
serves it: `python -m http.server -d _docs`). On GitHub, nbdev_docs builds the Quarto site from the same
configuration (.github/workflows/deploy.yaml). Pages are named as nbdev names them (01_audio.ipynb ->
audio.html), so the `_modidx.py` links and links between notebooks work in both.
"""
import argparse, html, importlib, json, multiprocessing, os, re, shutil, subprocess, sys
from urllib.parse import unquote
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nbformat, yaml
from execnb.nbio import NbCell, mk_cell
from fastcore.foundation import L
from nbdev.processors import FilterDefaults, add_show_docs, _def_names, _get_nm, _show_docs, _want_doc, cell_lang

root = Path(__file__).resolve().parents[1]
nbs = root / 'nbs'
SITE_CSS = """
body { margin: 0; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; }
nav.sidebar { position: fixed; top: 0; bottom: 0; left: 0; width: 16rem; overflow-y: auto; padding: 1rem; background: #f6f7f9; border-right: 1px solid #ddd; font-size: 90%; }
nav.sidebar a { color: #234; text-decoration: none; display: block; padding: 2px 0; }
nav.sidebar a.current { font-weight: 600; color: #2780e3; }
nav.sidebar .section { margin-top: .8rem; font-weight: 600; color: #666; text-transform: uppercase; font-size: 80%; }
nav.sidebar .home { font-size: 120%; font-weight: 700; margin-bottom: .5rem; }
main, #Search { margin-left: 18rem; max-width: 60rem; padding: 1rem 2rem 4rem; }
#Search { padding-bottom: 0; }
nav.toc { margin: 1rem 0; padding: .5rem 1rem; font-size: 85%; border-left: 1px solid #eee; }
nav.toc a { color: #444; text-decoration: none; display: block; padding: 1px 0; }
nav.toc a.h3 { padding-left: 1rem; }
nav.toc .toc-title { font-weight: 600; margin-bottom: .3rem; }
@media (min-width: 1480px) {  /* wide enough: the contents in a column of their own, right of the page */
  nav.toc { position: fixed; top: 0; bottom: 0; left: 82rem; right: 0; max-width: 18rem; margin: 0; padding: 1rem; overflow-y: auto; border-left: 1px solid #eee; }
}
h1.title { margin-bottom: .2rem; }
a { color: #2780e3; }
pre { background: #f7f7f7; padding: .5rem .8rem; overflow-x: auto; font-size: 85%; border-radius: 4px; }
code { font-size: 90%; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
img { max-width: 100%; }
.cell { margin: .8rem 0; }
.output_area pre { background: none; border-left: 2px solid lightsalmon; border-radius: 0; }
.anchor-link { visibility: hidden; margin-left: .3rem; text-decoration: none; }
:hover > .anchor-link { visibility: visible; }
.description p { margin-top: 0; }
.output_markdown > hr + p > a:only-child { float: right; font-size: smaller; }  /* show_doc's source link */
blockquote { margin-left: 0; padding-left: 1rem; border-left: 3px solid #ccc; color: #555; }
"""


def page_name(nb: Path) -> str:
    "The page nbdev makes of the notebook `nb` (01_audio.ipynb -> audio.html)."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(nb.name)).name


def sidebar() -> list[tuple[str, list[str]]]:
    "The sidebar's sections as (title, notebook names); the first, untitled, holds the home page."
    sections = [('', [])]
    for item in yaml.safe_load((nbs / 'sidebar.yml').read_text())['website']['sidebar']['contents']:
        if isinstance(item, str): sections[0][1].append(item)
        else: sections.append((item['section'], list(item['contents'])))
    return sections


DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+):?\s*(.*?)\s*$')


def directives(src: str) -> tuple[dict, str]:
    "Quarto's `#| key: value` lines at the top of a cell, and the source without them."
    lines, d = src.splitlines(), {}
    while lines and (m := DIRECTIVE.match(lines[0])):
        v = m.group(2).strip('"')
        d[m.group(1)] = v.lower() if v.lower() in ('true', 'false') else v
        lines.pop(0)
    return d, '\n'.join(lines)


def _shown(v) -> str:
    "A type or default as the table shows it: as written in code."
    text = v.__name__ if isinstance(v, type) else repr(v) if not isinstance(v, str) or v == '' else v
    return f'<code>{html.escape(text)}</code>'


def param_table(src: str, module: str) -> str:
    "The parameter table (as fastcore's `DocmentTbl` lays it out) for a `show_doc(name)` cell of the notebook exporting `module`; '' if none."
    # fastcore 1.8 shows docments as comments in the signature; the table is the layout nbdev's sites had before
    import dataclasses, importlib, inspect, warnings
    from fastcore.docments import docments
    m = re.search(r'show_doc\(([\w.]+)', src)
    if not m or not module: return ''
    try:
        obj = importlib.import_module(module)
        for part in m.group(1).split('.'): obj = getattr(obj, part)
        dm = {k: v for k, v in docments(obj, full=True).items() if k != 'self'}
    except Exception as e:  # a name show_doc rendered but docments cannot read: the page keeps the signature alone
        warnings.warn(f'{module}.{m.group(1)}: no parameter table ({e})')
        return ''
    if not any(v.get('docment') for v in dm.values()): return ''
    empty = inspect.Parameter.empty
    ret = dm.pop('return', {})
    has_default = any(v.get('default', empty) is not empty for v in dm.values())
    cells = lambda name, v: [name, _shown(v['anno']) if v.get('anno', empty) is not empty else ''] + (
        [_shown(v['default']) if v.get('default', empty) is not empty else ''] if has_default else []) + [re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(v.get('docment') or ''))]
    rows = [cells(html.escape(k), v) for k, v in dm.items()]
    if ret.get('anno', empty) not in (empty, None, 'None') and not dataclasses.is_dataclass(obj): rows.append(cells('<strong>Returns</strong>', ret))
    head = ['', 'Type'] + (['Default'] if has_default else []) + ['Details']
    # an HTML block, which markdown passes through whole (types hold `|`, defaults `<factory>`)
    return ('<table class="params"><thead><tr>' + ''.join(f'<th>{h}</th>' for h in head) + '</tr></thead><tbody>'
            + ''.join('<tr>' + ''.join(f'<td>{c}</td>' for c in r) + '</tr>' for r in rows) + '</tbody></table>')


def quarto_cells(nb, module: str = '') -> dict:
    "Show processed `nb`'s cells as Quarto would (hidden inputs and outputs, fences dropped); its frontmatter."
    fm, cells = {}, []
    for c in nb.cells:
        if c.cell_type == 'raw' and c.source.startswith('---'):
            fm.update(yaml.safe_load(c.source.strip().strip('-')) or {})
            continue
        if c.cell_type == 'markdown':
            c.source = drop_fences(c.source)
            if c.source.strip(): cells.append(c)
            continue
        if c.cell_type != 'code': continue
        d, c.source = directives(c.source or '')
        if (table := param_table(c.source, module)) and c.get('outputs'):
            md = c.outputs[0].get('data', {})
            if 'text/markdown' in md: md['text/markdown'] = ''.join(md['text/markdown']) + '\n\n' + table
        if d.get('include') == 'false': continue
        if d.get('output') == 'false': c.outputs = []
        for o in c.get('outputs', []):
            if 'text/markdown' in o.get('data', {}): o.data['text/markdown'] = show_doc_md(''.join(o.data['text/markdown']))
        if d.get('fig-cap') and c.get('outputs'):  # Quarto's caption, under the figure
            c.outputs.append(nbformat.v4.new_output('display_data', data={'text/markdown': f'*{d["fig-cap"]}*'}))
        if d.get('echo') == 'false' or not c.source.strip(): c.metadata.transient = {"remove_source": True}
        if c.source.strip() or c.get('outputs'): cells.append(c)
    nb.cells = cells
    return fm


def drop_fences(md: str) -> str:
    "Markdown without Quarto's `:::` fenced-div lines (those inside code blocks stay)."
    out, code = [], False
    for line in md.splitlines():
        if line.lstrip().startswith('```'): code = not code
        if code or not line.startswith(':::'): out.append(line)
    return '\n'.join(out)


def show_doc_md(md: str) -> str:
    "show_doc's markdown for nbconvert: Quarto's `[text](url){attrs}` links made plain, nbdev's links taken out of the signature's comments."
    md = re.sub(r'(\[[^\]]+\]\([^)\s]+\))\{[^}]*\}', r'\1', md)
    return re.sub(r'```python\n.*?```', lambda m: re.sub(r'\[(`[^`]+`)\]\([^)\s]+\)', r'\1', m.group(0)), md, flags=re.S)


def slug(text: str) -> str:
    "A heading's id as Pandoc (Quarto) makes it: lower case; letters, digits, `_-.` kept; spaces to dashes; nothing before the first letter."
    text = html.unescape(re.sub(r'<[^>]+>', '', unquote(text))).strip().lower()
    text = re.sub(r'[^\w\-.]', '', re.sub(r'\s+', '-', text))
    while text and not text[0].isalpha(): text = text[1:]
    return text or 'section'


def quarto_ids(body: str) -> str:
    """Headings' ids, and links to them on the same page, as Quarto makes them (what nbdev's `_modidx.py` links to):
    a repeated id gets -1, -2 in page order."""
    seen = {}
    def heading(m):
        base = slug(m.group(2)); n = seen.get(base, 0); seen[base] = n + 1
        return f'<{m.group(1)} id="{base}{f"-{n}" if n else ""}"'
    body = re.sub(r'<(h[1-6]) id="([^"]*)"', heading, body)
    return re.sub(r'href="#([^"]*)"', lambda m: f'href="#{slug(m.group(1))}"', body)


def fix_links(body: str, page: str, pages: dict[str, str], site: str, ids: dict[str, set]) -> str:
    "Links as this site needs them: notebooks to their pages, absolute links into the site made relative, each anchor one that exists."
    def href(m):
        url = html.unescape(m.group(1))
        if url.startswith(site): url = url[len(site):].lstrip('/') or 'index.html'
        if re.match(r'^[a-z]+:', url): return m.group(0)
        path, _, frag = url.partition('#')
        if Path(path).name in pages: path = pages[Path(path).name]
        here = ids.get(path or page)
        if frag and here is not None and frag not in here and ('.' in frag or frag.startswith('_')):
            # nbdev links every name in `_modidx.py`; a method or a private name has no heading of its own
            frag = frag.split('.')[0] if frag.split('.')[0] in here else ''
        return 'href="' + html.escape(path + ('#' + frag if frag else ''), quote=True) + '"'
    return re.sub(r'href="([^"]+)"', href, body)


def nav(sections, pages, titles, current: str) -> str:
    "The sidebar's HTML with `current` marked."
    out = [f'<a class="home" href="index.html">{html.escape(titles.get("index.ipynb", "Home"))}</a>']
    for title, names in sections:
        if title: out.append(f'<div class="section">{html.escape(title)}</div>')
        out += [f'<a href="{pages[n]}"{" class=current" if n == current else ""}>{html.escape(titles[n])}</a>'
                for n in names if n != 'index.ipynb']
    return '<nav class="sidebar">' + '\n'.join(out) + '</nav>'


class add_show_docs_in_order(add_show_docs):
    "nbdev's `add_show_docs`, with a cell's show_doc cells in source order (nbdev 2.4 inserts each right after the cell, reversing them)."
    def begin(self):
        nb = self.nb
        exports = L(c for c in nb.cells if _want_doc(c))
        shown = {_get_nm(t) for t in _show_docs(L(nb.cells).map(NbCell.parsed_).concat())}
        for cell in reversed(exports):  # from the end, so the index of each cell not yet done holds
            if cell_lang(cell) != 'python': raise ValueError(f"{cell.metadata.language} can't export:\n{cell.source}")
            for i, nm in enumerate(_def_names(cell, shown)):
                new = mk_cell(f'show_doc({nm})')
                new.has_sd = True
                nb.cells.insert(cell.idx_ + 1 + i, new)
        nb.has_docs_ = shown or exports


class SourceOrder(FilterDefaults):
    "nbdev's processors (what nbdev_docs runs), with `add_show_docs_in_order` for `add_show_docs`."
    def base_procs(self): return [add_show_docs_in_order if p is add_show_docs else p for p in super().base_procs()]


def toc(body: str) -> str:
    "The page's table of contents: its h2 and h3 headings, each a link to its id (what Quarto's `toc: true` shows)."
    items = []
    for level, hid, inner in re.findall(r'<(h[23]) id="([^"]+)"[^>]*>(.*?)</\1>', body, re.S):
        text = html.unescape(re.sub(r'<[^>]+>', '', re.sub(r'<a class="anchor-link".*?</a>', '', inner, flags=re.S))).strip()
        items.append(f'<a class="{level}" href="#{html.escape(hid, quote=True)}">{html.escape(text)}</a>')
    if not items: return ''
    return '<nav class="toc" id="TOC" aria-label="On this page" data-pagefind-ignore><div class="toc-title">On this page</div>' + '\n'.join(items) + '</nav>'


# Pagefind's search box; its results link from the folder the pages are in (every page is at the site's top level),
# so the site works wherever it is served. Ids in upper case never meet a heading's (Pandoc's are lower case).
SEARCH = ('<link rel="stylesheet" href="pagefind/pagefind-ui.css"><script src="pagefind/pagefind-ui.js"></script>'
          '<script>window.addEventListener("DOMContentLoaded", () => new PagefindUI({element: "#Search", showSubResults: true, '
          'showImages: false, baseUrl: new URL(".", location.href).pathname}))</script>')


def index_search(out: Path):
    "Pagefind's index of the pages in `out` (the page bodies, `data-pagefind-body`), and its search UI, into `out/pagefind`."
    shutil.rmtree(out / 'pagefind', ignore_errors=True)  # its files are named by content: an old index would stay beside the new
    # `_` kept inside words, so that snake_case names are found whole; the headings' ¶ links left out of the text
    r = subprocess.run([sys.executable, '-m', 'pagefind', '--site', str(out), '--glob', '*.html', '--include-characters', '_',
                        '--exclude-selectors', '.anchor-link', '--quiet'], capture_output=True, text=True)
    if r.returncode or not (out / 'pagefind' / 'pagefind-ui.js').exists(): sys.exit(f'pagefind failed:\n{r.stdout}{r.stderr}')


def build(out: Path = root / '_docs', proc: Path = root / '_proc', workers: int = 2) -> list[Path]:
    "Build the site into `out` (processed notebooks in `proc`); the pages written."
    import nbdev.serve_drv
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import markdown2html_mistune
    from nbdev.processors import _default_exp
    from nbdev.config import get_config
    from pygments.formatters import HtmlFormatter
    cfg = get_config()
    site = cfg.doc_host.rstrip('/') + cfg.doc_baseurl.rstrip('/') + '/'
    sections = sidebar()
    listed = [n for _, ns in sections for n in ns]
    notebooks = sorted(p.name for p in nbs.glob('*.ipynb'))
    if unlisted := sorted(set(notebooks) - set(listed)): sys.exit(f'not in nbs/sidebar.yml: {", ".join(unlisted)}')
    if missing := sorted(set(listed) - set(notebooks)): sys.exit(f'nbs/sidebar.yml names missing notebooks: {", ".join(missing)}')
    proc.mkdir(parents=True, exist_ok=True)
    # nbdev's processing, run as nbdev_proc_nbs runs it: nbdev.serve_drv.main on each notebook, in spawned processes.
    # Its warning about hidden cells that import and also set a constant (CORPUS) is left out: they are meant to run.
    os.environ['PYTHONWARNINGS'] = 'ignore:Found cells containing imports and other code:UserWarning'
    # The processors go by name to the spawned processes: this module as `docs` (.ci is on their sys.path), not as __main__.
    procs = importlib.import_module('docs').SourceOrder
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('spawn')) as ex:
        list(ex.map(nbdev.serve_drv.main, [(nbs / n, proc / n, procs) for n in listed]))
    pages = {n: page_name(nbs / n) for n in listed}
    if len(set(pages.values())) < len(pages): sys.exit(f'two notebooks make the same page: {sorted(pages.values())}')
    exporter = HTMLExporter(template_name='basic', exclude_input_prompt=True, exclude_output_prompt=True, embed_images=True)
    rendered, titles = {}, {}
    for n in listed:
        nb = nbformat.read(proc / n, as_version=4)
        exp = _default_exp(nbformat.read(nbs / n, as_version=4))
        fm = quarto_cells(nb, f'{cfg.lib_path.name}.{exp}' if exp else '')
        titles[n] = fm.get('title') or n
        body, _ = exporter.from_notebook_node(nb, resources={'metadata': {'path': str(nbs)}})
        rendered[n] = (fm, quarto_ids(body))
    ids = {pages[n]: set(re.findall(r'\sid="([^"]+)"', body)) for n, (_, body) in rendered.items()}
    rendered = {n: (fm, fix_links(body, pages[n], pages, site, ids)) for n, (fm, body) in rendered.items()}
    out.mkdir(parents=True, exist_ok=True)
    if (old := out / 'pages.json').exists():  # the pages of the last build, so a renamed notebook leaves none behind
        for name in json.loads(old.read_text()): (out / name).unlink(missing_ok=True)
    (out / 'site.css').write_text(SITE_CSS + HtmlFormatter().get_style_defs('.highlight'))
    (out / 'styles.css').write_text((nbs / 'styles.css').read_text())
    written = []
    for n, (fm, body) in rendered.items():
        desc = f'<div class="description">{markdown2html_mistune(fm["description"])}</div>' if fm.get('description') else ''
        page = (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">'
                f'<title>{html.escape(titles[n])} – {html.escape(cfg.title)}</title>'
                f'<link rel="stylesheet" href="site.css"><link rel="stylesheet" href="styles.css">{SEARCH}</head>\n<body>\n'
                f'{nav(sections, pages, titles, n)}\n<div id="Search" role="search"></div>\n'
                f'<main data-pagefind-body><header><h1 class="title">{html.escape(titles[n])}</h1>{desc}</header>\n{toc(body)}\n'
                f'{body}\n</main></body></html>\n')
        (out / pages[n]).write_text(page, encoding='utf-8')
        written.append(out / pages[n])
    (out / 'pages.json').write_text(json.dumps({pages[n]: titles[n] for n in listed}, indent=1))
    index_search(out)
    return written


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', type=Path, default=root / '_docs', help='where the site goes')
    p.add_argument('--proc', type=Path, default=root / '_proc', help="where nbdev's processed notebooks go")
    p.add_argument('--workers', type=int, default=2, help='notebooks processed at once')
    a = p.parse_args()
    written = build(a.out, a.proc, a.workers)
    print(f'{len(written)} pages in {a.out}; open {a.out / "index.html"}')
