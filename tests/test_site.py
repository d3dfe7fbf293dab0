"""The docs site `make docs` builds without Quarto: a page per notebook with its title, figures and
show_doc tables (in source order, each with its source link), a table of contents and a search box, the
index as home page, and links that work, as the HTML says and as headless Chromium renders it."""
import asyncio, contextlib, json, re, shutil, subprocess, sys, tempfile
from html import unescape
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
from conftest import BROWSER as CHROMIUM
sys.path.insert(0, str(ROOT / '.ci'))
from docs import page_name  # noqa: E402


@pytest.fixture(scope='module')
def site(tmp_path_factory) -> Path:
    "The site, built once for these tests."
    tmp = tmp_path_factory.mktemp('site')
    r = subprocess.run([sys.executable, str(ROOT / '.ci' / 'docs.py'), '--out', str(tmp / '_docs'), '--proc', str(tmp / '_proc')],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return tmp / '_docs'


def notebooks() -> list[Path]:
    return sorted((ROOT / 'nbs').glob('*.ipynb'))


def title(nb: Path) -> str:
    "A notebook's title: its first markdown cell's `# ` heading."
    first = next(c for c in nbformat.read(nb, as_version=4).cells if c.cell_type == 'markdown')
    return re.match(r'#\s+(.+)', first.source).group(1).strip()


def figures(nb: Path) -> int:
    "Images a reader sees in `nb`: image outputs of cells the site shows."
    n = 0
    for c in nbformat.read(nb, as_version=4).cells:
        if c.cell_type != 'code': continue
        flags = {f.replace(' ', '') for f in re.findall(r'^#\|\s*(.*?)\s*$', c.source, re.M)}
        if flags & {'hide', 'include:false', 'output:false', 'export', 'exporti'}: continue
        n += sum(any(k.startswith('image/') for k in o.get('data', {})) for o in c.get('outputs', []))
    return n


def public_names() -> dict[str, list[str]]:
    "Each page's documented names, from the package's `_modidx.py` (what nbdev links `name` in prose to)."
    from artist_hotline._modidx import d
    pages = {}
    for mod, syms in d['syms'].items():
        for sym, (url, _) in syms.items():
            page, _, anchor = url.partition('#')
            name = sym[len(mod) + 1:]
            if '.' not in name and not name.startswith('_'): pages.setdefault(page, []).append(anchor)
    return pages


def test_notebooks_have_outputs():
    "The notebooks are committed run, with their figures (`make notebooks`), and nothing in an output that changes from run to run."
    ran = [nb.stem for nb in notebooks() if any(c.get('outputs') for c in nbformat.read(nb, as_version=4).cells if c.cell_type == 'code')]
    assert len(ran) >= len(notebooks()) - 2, sorted({nb.stem for nb in notebooks()} - set(ran))
    for nb in notebooks():  # a notebook that plots shows its plots
        plots = any(re.search(r'\bplt\.|\bplot_\w+\(', c.source) and not re.search(r'^#\|\s*(hide|export)', c.source, re.M)
                    for c in nbformat.read(nb, as_version=4).cells if c.cell_type == 'code')
        assert not plots or figures(nb), f'{nb.name} plots but has no figure: run `make notebooks`'
    assert sum(map(figures, notebooks())) >= 25
    for nb in notebooks():
        for c in nbformat.read(nb, as_version=4).cells:
            for o in c.get('outputs', []):
                assert o.output_type != 'error', f'{nb.name}: a cell failed: {o.get("ename")}: {o.get("evalue")}'
                text = json.dumps(o)
                assert str(ROOT) not in text and not re.search(r'\btmp[a-z0-9_]{8}\b|/ipykernel_\d+/', text), f'{nb.name}: a run-specific path in an output'


def test_every_notebook_a_page(site):
    pages = json.loads((site / 'pages.json').read_text())  # (that the sidebar lists every notebook is test_docs.py's)
    assert sorted(pages) == sorted(page_name(nb) for nb in notebooks())
    assert 'index.html' in pages and 'audio.html' in pages and '01_audio.html' not in pages
    for nb in notebooks():
        html = (site / page_name(nb)).read_text()
        h1 = re.search(r'<h1 class="title">(.*?)</h1>', html)
        assert h1 and unescape(h1.group(1)) == title(nb), nb.name
        assert html.count('<img') >= figures(nb), (nb.name, html.count('<img'), figures(nb))
        assert '.ipynb"' not in html and 'href="https://artist-hotline.github.io' not in html, nb.name
        assert '#| ' not in html and ':::' not in html, nb.name  # Quarto's directives and fences are not shown as text


def test_show_doc_tables(site):
    "Every public name nbdev links to is a heading on its page, and documented functions have their parameter tables."
    for page, anchors in public_names().items():
        html = (site / page).read_text()
        ids = set(re.findall(r'\sid="([^"]+)"', html))
        assert not (missing := sorted(set(anchors) - ids)), (page, missing)
    audio = (site / 'audio.html').read_text()
    assert re.search(r'<table class="params">.*?<th>Type</th>.*?<td>codes</td><td><code>bytes \| bytearray', audio, re.S), 'show_doc parameter table'
    report = (site / 'report.html').read_text()
    assert '<td><code>&lt;factory&gt;</code></td>' in (site / 'calibrate.html').read_text()  # a default that looks like a tag is shown
    assert '<td>calls</td><td><code>pd.DataFrame</code></td><td></td><td><code>load_calls</code></td>' in report
    assert 'data:image/png;base64,' in (site / 'vad.html').read_text()  # figures are inside the page


def test_links_resolve(site):
    "Every relative link names a page that exists, and an anchor on it; no id is on a page twice (checked without a browser too)."
    ids = {p.name: set(re.findall(r'\sid="([^"]+)"', p.read_text())) for p in site.glob('*.html')}
    for p in site.glob('*.html'):
        found = re.findall(r'\sid="([^"]+)"', p.read_text())
        assert len(found) == len(set(found)), (p.name, sorted({i for i in found if found.count(i) > 1}))
    for page in site.glob('*.html'):
        for href in map(unescape, re.findall(r'href="([^"]+)"', page.read_text())):
            if re.match(r'^[a-z]+:', href): continue
            path, _, frag = href.partition('#')
            target = path or page.name
            assert (site / target).exists(), (page.name, href)
            if frag and target.endswith(".html"): assert frag in ids[target], (page.name, href)


class Tab:
    "One Chromium tab driven over the DevTools protocol."
    def __init__(self, ws): self.ws, self.n, self.events = ws, 0, []

    async def call(self, method: str, **params) -> dict:
        self.n += 1
        await self.ws.send_json({'id': self.n, 'method': method, 'params': params})
        while True:
            m = await self.ws.receive_json()
            if m.get('id') == self.n:
                if 'error' in m: raise RuntimeError(f'{method}: {m["error"]}')
                return m.get('result', {})
            self.events.append(m)

    async def open(self, url: str) -> dict:
        "Load `url` and return what the page shows (title, images, links, ids)."
        self.events.clear()
        nav = await self.call('Page.navigate', url=url)
        assert not nav.get('errorText'), (url, nav)
        while not any(e.get('method') == 'Page.loadEventFired' for e in self.events): self.events.append(await self.ws.receive_json())
        r = await self.call('Runtime.evaluate', returnByValue=True, expression="""({
            title: document.title, h1: document.querySelector('h1.title')?.textContent,
            images: [...document.images].map(i => i.complete && i.naturalWidth > 0),
            links: [...document.querySelectorAll('a[href]')].map(a => a.href),
            ids: [...document.querySelectorAll('[id]')].map(e => e.id),
            sidebar: document.querySelectorAll('nav.sidebar a').length, tables: document.querySelectorAll('table').length,
            headings: [...document.querySelectorAll('main h2[id], main h3[id]')].map(h => h.id),
            toc: [...document.querySelectorAll('#TOC a')].map(a => a.getAttribute('href')),
            tocBox: document.querySelector('#TOC')?.getBoundingClientRect().toJSON(),
            mainBox: document.querySelector('main').getBoundingClientRect().toJSON(),
            search: !!document.querySelector('#Search input.pagefind-ui__search-input')})""")
        return r['result']['value']

    async def search(self, query: str) -> dict:
        "Type `query` into the page's search box; Pagefind's message and the pages of its results, once every result shown is loaded."
        await self.call('Runtime.evaluate', expression="document.querySelector('#Search input').focus()")
        await self.call('Input.insertText', text=query)
        r = await self.call('Runtime.evaluate', returnByValue=True, awaitPromise=True, expression="""new Promise(resolve => {
            const box = document.querySelector('#Search');
            const done = () => {  // Pagefind says "N results for …" and has filled in each result it lists
                const message = box.querySelector('.pagefind-ui__message')?.textContent || '';
                const results = [...box.querySelectorAll('.pagefind-ui__result')];
                if (!/results? for/.test(message) || !results.every(r => r.querySelector('.pagefind-ui__result-link'))) return false;
                resolve({message, pages: results.map(r => r.querySelector('.pagefind-ui__result-link').href),
                         links: [...box.querySelectorAll('.pagefind-ui__result-link')].map(a => a.href)});
                return true;
            };
            if (!done()) new MutationObserver((_, o) => done() && o.disconnect()).observe(box, {childList: true, subtree: true, characterData: true});
        })""")
        return r['result']['value']


@contextlib.asynccontextmanager
async def chromium_tab():
    "A tab of headless Chromium, wide enough for the page's contents column."
    ud = tempfile.mkdtemp(prefix='chromium-')
    p = await asyncio.create_subprocess_exec(
        CHROMIUM, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--window-size=1600,1000', '--remote-debugging-port=0', f'--user-data-dir={ud}',
        'about:blank', stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    drain = None
    try:
        said = b''
        while not (m := re.search(rb'DevTools listening on (ws://\S+)', said)):
            line = await p.stderr.readline()
            assert line, f'Chromium stopped before it listened: {said.decode(errors="replace")[-2000:]}'
            said += line
        drain = asyncio.create_task(p.stderr.read())  # keep reading its log, so a full pipe never blocks it
        port = urlsplit(m.group(1).decode()).port
        async with aiohttp.ClientSession() as http:
            while not (pages := [t for t in await (await http.get(f'http://127.0.0.1:{port}/json/list')).json() if t['type'] == 'page']):
                await asyncio.sleep(0.1)
            async with http.ws_connect(pages[0]['webSocketDebuggerUrl'], max_msg_size=0) as ws:
                tab = Tab(ws)
                await tab.call('Page.enable')
                yield tab
    finally:
        if p.returncode is None: p.kill()
        await p.wait()
        if drain: await drain
        shutil.rmtree(ud, ignore_errors=True)


async def chromium_pages(urls: list[str]) -> dict[str, dict]:
    "Each of `urls` as headless Chromium shows it, in one browser."
    async with chromium_tab() as tab: return {u: await tab.open(u) for u in urls}


async def test_site_in_headless_chromium(browser, site):
    "Every page loads in Chromium with its title, its sidebar and every figure drawn; no link leads nowhere."
    base = site.as_uri() + '/'
    pages = {page_name(nb): nb for nb in notebooks()}
    seen = await asyncio.wait_for(chromium_pages([base + name for name in pages]), 300)
    ids = {url[len(base):]: set(v['ids']) for url, v in seen.items()}
    for url, v in seen.items():
        nb = pages[url[len(base):]]
        assert v['h1'] == title(nb) and v['title'].startswith(title(nb)), (nb.name, v['title'], v['h1'])
        assert v['sidebar'] == len(pages), nb.name  # the home link and every other page
        assert len(v['images']) >= figures(nb) and all(v['images']), (nb.name, v['images'])
        assert v['toc'] == ['#' + h for h in v['headings']] and v['search'], nb.name  # the contents: every h2 and h3, in page order
        if v['toc']: assert v['tocBox']['left'] >= v['mainBox']['right'] and v['tocBox']['width'] > 100, (nb.name, v['tocBox'], v['mainBox'])
        for link in v['links']:
            if not link.startswith(base): continue
            path, _, frag = unquote(link[len(base):]).partition('#')
            assert (site / path).exists(), (nb.name, link)
            if frag and path in ids: assert frag in ids[path], (nb.name, link)
    assert seen[base + 'audio.html']['tables'] > 0 and sum(len(v["images"]) for v in seen.values()) >= 25


def test_table_of_contents(site):
    "Each page has its h2 and h3 headings, in page order, as links in its table of contents (Quarto's `toc: true`)."
    for page in site.glob('*.html'):
        text = page.read_text()
        main = text[text.index('<main'):]
        headings = re.findall(r'<h[23] id="([^"]+)"', main)
        toc = re.search(r'<nav class="toc" id="TOC"[^>]*>(.*?)</nav>', text, re.S)
        assert bool(toc) == bool(headings), page.name
        if toc: assert re.findall(r'href="#([^"]+)"', toc.group(1)) == headings, page.name
    turns = re.search(r'<nav class="toc" id="TOC"[^>]*>(.*?)</nav>', (site / 'turns.html').read_text(), re.S).group(1)
    assert '<a class="h2" href="#the-turn-taker">The turn-taker</a>' in turns and '<a class="h3" href="#turntaker">TurnTaker</a>' in turns


def source_links(html: str) -> list[tuple[str, int, str]]:
    "Each show_doc's source link on a page: (url without its line, line, the name documented under it)."
    return [(m.group(1), int(m.group(2)), unescape(re.sub(r'<[^>]+>|¶', '', m.group(3))).strip())
            for m in re.finditer(r'<a href="([^"#]+)#L(\d+)"[^>]*>source</a>.*?<h[34][^>]*>(.*?)</h[34]>', html, re.S)]


def test_api_entries_in_source_order(site):
    "A notebook cell that defines several names shows their entries in the order it defines them (nbdev 2.4 reverses them)."
    audio = [name for _, _, name in source_links((site / 'audio.html').read_text())]
    assert audio.index('ulaw_encode') < audio.index('ulaw_decode')  # one cell: ulaw_encode, then ulaw_decode
    for page in site.glob('*.html'):  # nbdev_export writes the cells in notebook order, so the lines of a module rise down its page
        lines = {}
        for url, line, _ in source_links(page.read_text()): lines.setdefault(url, []).append(line)
        for url, ls in lines.items(): assert ls == sorted(ls), (page.name, url, ls)
    from execnb.nbio import dict2nb, mk_cell
    from nbdev.process import NBProcessor
    from docs import add_show_docs_in_order
    nb = dict2nb({'cells': [mk_cell('#| export\ndef second(): pass\nclass First: pass'), mk_cell('second()')], 'metadata': {}})
    NBProcessor(nb=nb, procs=[add_show_docs_in_order]).process()
    assert [c.source for c in nb.cells][1:] == ['show_doc(second)', 'show_doc(First)', 'second()']


def test_source_links(site):
    "Every show_doc's source link is the repository and branch of settings.ini, at the file and line that define the name."
    from configparser import ConfigParser
    cfg = ConfigParser(delimiters=['=']); cfg.read(ROOT / 'settings.ini'); cfg = cfg['DEFAULT']
    prefix = f"{cfg['git_url'].rstrip('/')}/blob/{cfg['branch']}/{cfg['lib_path']}/"
    n = 0
    for page in site.glob('*.html'):
        links = source_links(text := page.read_text())
        assert text.count('>source</a>') == len(links), page.name  # each with a line, and a name under it
        for url, line, name in links:
            assert url.startswith(prefix) and url.endswith('.py'), (page.name, url)
            src = (ROOT / cfg['lib_path'] / url[len(prefix):]).read_text().splitlines()
            assert re.match(rf'\s*(async\s+def|def|class)\s+{re.escape(name.split(".")[-1])}\b', src[line - 1]), (page.name, name, url, line)
            n += 1
    assert n >= 250, n  # the show_doc of nearly every exported name has one


async def test_search_in_headless_chromium(browser, site):
    "A name typed into a page's search box lists the page that documents it, linked where the site is served (here under /docs/)."
    from aiohttp import web
    app = web.Application()
    app.router.add_static('/docs/', site)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, '127.0.0.1', 0).start()
    base = f'http://127.0.0.1:{runner.addresses[0][1]}/docs/'
    try:
        async with chromium_tab() as tab:
            for page, query, want in [('index.html', 'TurnTaker', 'turns.html'), ('vad.html', 'pcm_to_payload', 'audio.html')]:
                assert (await tab.open(base + page))['search'], page
                found = await asyncio.wait_for(tab.search(query), 120)
                assert base + want in found['pages'][:3], (query, found)
                assert f'{base}{want}#{query.lower()}' in found['links'], (query, found['links'])  # and its entry on that page
    finally:
        await runner.cleanup()


def test_make_notebooks_masks_what_is_random():
    "`make notebooks` masks temp folders, ports, simulated SIDs and stream tokens, and flags what it cannot mask."
    import nbformat.v4 as v4
    from notebooks import stable, volatile
    nb = v4.new_notebook(cells=[v4.new_code_cell('x', outputs=[
        v4.new_output('stream', name='stderr', text='kept in /tmp/tmpab12_x9z/pending.jsonl\n'),
        v4.new_output('execute_result', data={'text/plain': "('http://127.0.0.1:41555', 'CA33e089b3205fbc6e7339a529b6567d89', "
                                                             "'AC00000000000000000000000000000000', '1796146558.ZHOwbhoJj0T_j7Bo2zcjq5od1eZtIdIM')"})])])
    assert len(volatile(nb)) == 4
    stable(nb)
    out = nb.cells[0].outputs
    assert out[0].text == 'kept in /tmp/tmp…/pending.jsonl\n'
    assert out[1].data['text/plain'] == "('http://127.0.0.1:PORT', 'CA…', 'AC00000000000000000000000000000000', 'EXPIRY.SIGNATURE')"
    assert volatile(nb) == []
    nb.cells[0].outputs = [v4.new_output('stream', name='stdout', text=f'{ROOT}/out/demo <object at 0x7f17c3eca4a0>')]
    assert len(volatile(nb)) == 2  # the checkout's path and an address: the notebook must show them otherwise
