"""The result pages an engine adapter reads, in each engine's shape, rendered from one result list.

The demo web (`site`) serves its results in both shapes, and the scraper's tests serve their
own catalogue (with unreadable results and faults) through the same renderers, so an adapter
is tested against the pages the demo shows:

- **demo** (`demo_page`, `demo_api`): ``/search?q=`` renders the first page (``a.fs-result``
  with ``data-full``, ``data-rank``); scrolling near the bottom loads the next pages as JSON
  from ``/api/results?q=&offset=`` (``{"results": [...], "next": offset | null}``); ``#fs-end``
  marks the end;
- **duckduckgo** (`ddg_page`, `ddg_results`): ``/?q=&iax=images&ia=images`` is a page without
  results whose script carries the query's ``vqd`` token and reads the results as JSON from
  ``/i.js?l=&o=json&q=&vqd=&f=&p=`` (``results`` with ``image``, ``url``, ``thumbnail``,
  ``title``; ``next`` is the following page's ``i.js?...&s=<offset>``); a bot check (the
  "anomaly" modal) replaces the page when DuckDuckGo doubts the client;
- **bing** (`bing_page`, `bing_items`): ``/images/search?q=&form=HDRSC2&first=1``, results as
  ``a.iusc`` whose ``m`` attribute holds JSON with every key a real result's has, a cookie
  banner (``#bnp_btn_accept``) that blocks loading until accepted (its click calls
  ``/consent``), scroll loading from ``/images/async?q=&first=``, and a "See more images"
  button (``div.mm_seemore a.btn_seemore``) to click after every scroll-loaded page, with
  ``data-isend="true"`` once nothing more will come.

A `Result` whose ``full`` is None is unreadable (no ``data-full``; a broken ``m``): what a
half-rendered result looks like to an adapter.
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode


@dataclass(frozen=True)
class Result:
    """One result as a page shows it (URLs may be relative to the site)."""

    rank: int
    full: str | None  # the image; None: unreadable
    page: str  # the page the image is on
    thumb: str
    title: str = ""

    def api(self) -> dict[str, Any]:
        return {"full": self.full, "page": self.page, "thumb": self.thumb, "rank": self.rank, "title": self.title}


# -- demo -----------------------------------------------------------------------------------

_PAGE_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#fafafa;color:#222}
header{padding:12px 20px;background:#fff;border-bottom:1px solid #ddd;position:sticky;top:0}
header form{display:inline}header input{width:320px;padding:6px}
main{padding:16px 20px}.fs-count{color:#666;font-size:14px}
#results{display:grid;grid-template-columns:repeat(auto-fill,170px);gap:12px}
.fs-result img{width:170px;height:170px;object-fit:cover;display:block;background:#ddd;border-radius:4px}
#fs-loading,#fs-end{margin:24px 0;color:#666;text-align:center}
"""

_SCROLL_SCRIPT = """
(() => {
  const results = document.getElementById("results");
  const loading = document.getElementById("fs-loading");
  const q = results.dataset.q;
  const marksEnd = results.dataset.end !== "never";
  let next = results.dataset.next === "" ? null : Number(results.dataset.next);
  let busy = false;
  const nearBottom = () =>
    window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 400;
  const finish = () => {
    if (!marksEnd || document.getElementById("fs-end")) return;
    const end = document.createElement("div");
    end.id = "fs-end";
    end.textContent = "No more results";
    loading.after(end);
  };
  const add = (r) => {
    const a = document.createElement("a");
    a.className = "fs-result";
    a.href = r.page;
    if (r.full) a.dataset.full = r.full;
    a.dataset.rank = String(r.rank);
    const img = document.createElement("img");
    img.src = r.thumb;
    img.alt = r.title;
    a.appendChild(img);
    results.appendChild(a);
  };
  async function more() {
    if (busy || next === null) return;
    busy = true;
    loading.hidden = false;
    let loaded = false;
    try {
      const resp = await fetch(`/api/results?q=${encodeURIComponent(q)}&offset=${next}`);
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const data = await resp.json();
      data.results.forEach(add);
      next = data.next;
      loaded = true;
    } catch (err) {
      console.warn("loading more results failed; retrying in 1 s", err);
    } finally {
      busy = false;
      loading.hidden = true;
    }
    if (!loaded) setTimeout(more, 1000);
    else if (next === null) finish();
    else if (nearBottom()) more();
  }
  const onScroll = () => { if (nearBottom()) more(); };
  window.addEventListener("scroll", onScroll, { passive: true });
  window.addEventListener("resize", onScroll);
  onScroll();
})();
"""


def html_page(title: str, body: str, query: str = "") -> bytes:
    """A page of the demo site: its search box, then ``body``."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_PAGE_STYLE}</style></head><body>"
        '<header><form id="fs-search" action="/search" method="get" role="search">'
        f'<input type="search" name="q" value="{html.escape(query)}" placeholder="Search images of people" '
        'autocomplete="off"> <button type="submit">Search</button></form></header>'
        f"<main>{body}</main></body></html>\n"
    ).encode()


def _demo_link(r: Result) -> str:
    full = f' data-full="{html.escape(r.full)}"' if r.full else ""
    return (
        f'<a class="fs-result" href="{html.escape(r.page)}"{full} data-rank="{r.rank}">'
        f'<img src="{html.escape(r.thumb)}" alt="{html.escape(r.title)}"></a>'
    )


def demo_page(query: str, results: Sequence[Result], page_size: int, *, marks_end: bool = True) -> bytes:
    """The demo shape's search page: the first ``page_size`` of ``results``, the rest loaded on scroll.

    ``marks_end`` False: the page never shows ``#fs-end`` (a site that does not say it is done).
    """
    more = len(results) > page_size
    label = f'{len(results)} results for "{html.escape(query)}"' if query else "Type a name to search"
    end = '<div id="fs-end">No more results</div>' if marks_end and not more else ""
    never = "" if marks_end else ' data-end="never"'
    body = (
        f'<p class="fs-count">{label}</p>'
        f'<div id="results" data-q="{html.escape(query)}" data-next="{page_size if more else ""}"{never}>'
        + "".join(_demo_link(r) for r in results[:page_size])
        + '</div><div id="fs-loading" hidden>Loading more results&hellip;</div>'
        + end
        + f"<script>{_SCROLL_SCRIPT}</script>"
    )
    title = f"{query} - FaceScale images" if query else "FaceScale images"
    return html_page(title, body, query)


def demo_api(results: Sequence[Result], offset: int, page_size: int) -> dict[str, Any]:
    """The demo shape's ``/api/results`` answer from ``offset``."""
    end = offset + page_size
    return {"results": [r.api() for r in results[offset:end]], "next": end if end < len(results) else None}


# -- bing -----------------------------------------------------------------------------------

_BING_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - Bing images</title>
<style>li {{ display: block; height: 160px; }} .mm_seemore {{ display: none; }}
#bnp_container {{ position: fixed; top: 0; left: 0; right: 0; height: 80px; background: #fff; }}</style>{head}</head>
<body>
<div id="bnp_container"><button id="bnp_btn_accept">Accept</button></div>
<div id="mmComponent_images_1"><ul class="dgControl_list">{items}</ul></div>
<div class="mm_seemore" data-isend="{isend}">
<a class="btn_seemore cbtn mBtn" href="javascript:void(0)">See more images</a></div>
<script>
const state = {state};
let consented = false, loading = false, needsButton = false;
const seeMore = document.querySelector('.mm_seemore');
document.getElementById('bnp_btn_accept').addEventListener('click', () => {{
  consented = true;
  document.getElementById('bnp_container').remove();
  fetch('/consent');
}});
async function load() {{
  if (loading || state.next >= state.total) return;
  loading = true;
  const r = await fetch('/images/async?q=' + encodeURIComponent(state.q) + '&first=' + state.next);
  document.querySelector('ul.dgControl_list').insertAdjacentHTML('beforeend', await r.text());
  state.next += state.page;
  needsButton = true;  // after every scroll-loaded page, a person must ask for more
  if (state.next >= state.total) seeMore.setAttribute('data-isend', 'true');
  loading = false;
}}
window.addEventListener('scroll', () => {{
  if (!consented || loading || state.next >= state.total) return;
  const bottom = window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 300;
  if (!bottom) return;
  if (needsButton) {{ seeMore.style.display = 'block'; return; }}
  load();
}});
seeMore.querySelector('a').addEventListener('click', () => {{
  seeMore.style.display = 'none';
  needsButton = false;
  load();
}});
</script>{tail}</body></html>
"""


def _bing_item(r: Result) -> str:
    # the keys of a real result's m attribute, in their order on saved pages
    digest = hashlib.md5(str(r.full).encode()).hexdigest()
    meta = json.dumps({
        "sid": "", "cturl": f"https://www.bing.com/images/click?q={r.rank}", "cid": digest[:8],
        "purl": r.page, "murl": r.full, "turl": r.thumb, "md5": digest, "shkey": "",
        "t": r.title or f"Result {r.rank}", "mid": digest[8:24].upper(), "desc": "",
    })
    if r.full is None:
        meta = '{"murl": "broken'  # what a half-rendered attribute looks like
    return (
        '<li><div class="iuscp"><div class="imgpt">'
        f'<a class="iusc" href="/images/search?view=detailV2&amp;id={r.rank}" m="{html.escape(meta)}">'
        f'<img class="mimg" src="{html.escape(r.thumb)}"></a></div></div></li>'
    )


def bing_items(results: Sequence[Result]) -> str:
    """Result items as ``/images/async`` returns them (HTML to append to the list)."""
    return "".join(_bing_item(r) for r in results)


def bing_page(query: str, results: Sequence[Result], page_size: int, *, head: str = "", tail: str = "") -> bytes:
    """The Bing shape's search page: the first ``page_size`` of ``results``; ``head`` and ``tail`` are
    HTML put at the end of the head and of the body (a script, say)."""
    state = {"q": query, "next": page_size, "total": len(results), "page": page_size}
    return _BING_PAGE.format(
        title=html.escape(query),
        items=bing_items(results[:page_size]),
        isend="true" if len(results) <= page_size else "false",
        state=json.dumps(state),
        head=head,
        tail=tail,
    ).encode()


# -- duckduckgo ------------------------------------------------------------------------------

_DDG_PAGE = """<!doctype html>
<html lang="en-US"><head><meta charset="utf-8"><title>{title} at DuckDuckGo</title></head>
<body class="body--serp">
<div id="react-layout"><div id="zci-images" class="zci"><div class="tile-wrap"></div></div></div>
<script>
window.DDG = window.DDG || {{deep: {{initialize() {{}}}}}};
{token}
(async () => {{
  const wrap = document.querySelector(".tile-wrap");
  const params = {{l: "us-en", o: "json", q: {query}, vqd: {vqd}, f: ",,,", p: "1"}};
  const answer = await fetch("i.js?" + new URLSearchParams(params));
  if (!answer.ok) return;
  for (const r of (await answer.json()).results) {{
    const tile = document.createElement("div");
    tile.className = "tile tile--img";
    tile.innerHTML = '<img class="tile--img__img" src="' + r.thumbnail + '">';
    wrap.appendChild(tile);
  }}
}})();
</script>
</body></html>
"""

_DDG_ANOMALY = """<!doctype html>
<html lang="en-US"><head><meta charset="utf-8"><title>DuckDuckGo</title></head>
<body><div class="anomaly-modal__modal" data-testid="anomaly-modal">
<div class="anomaly-modal__title">Unfortunately, bots use DuckDuckGo too.</div>
<div class="anomaly-modal__description">Please complete the following challenge to confirm this search
was made by a human.</div>
</div></body></html>
"""


#: What DuckDuckGo's ``i.js`` answers (with 403) to a request it refuses: a missing or wrong token, a bot.
DDG_REFUSED = "If this error persists, please let us know: error-lite@duckduckgo."


def ddg_token(query: str) -> str:
    """The ``vqd`` token the DuckDuckGo shape gives a query (the real one: ``4-`` and digits, per query)."""
    return "4-" + str(int(hashlib.sha256(query.encode()).hexdigest()[:24], 16))


def ddg_page(query: str, *, challenge: bool = False) -> bytes:
    """DuckDuckGo's image-search page (``/?q=&iax=images&ia=images``): no result in its HTML; its script
    reads them from ``i.js`` with the page's ``vqd`` token. ``challenge``: the bot check it shows instead."""
    if challenge:
        return _DDG_ANOMALY.encode()
    vqd = ddg_token(query)
    # the token sits in the page's script as on the real page: vqd="4-...", beside its other settings
    token = f'DDG.deep.initialize("/d.js?q={html.escape(query)}&l=us-en&s=0&dl=en&ct=US&vqd={vqd}&p_ent=&ex=-1");'
    return _DDG_PAGE.format(title=html.escape(query), token=token, query=json.dumps(query),
                            vqd=json.dumps(vqd)).encode()


def ddg_results(query: str, results: Sequence[Result], offset: int, page_size: int) -> dict[str, Any]:
    """``i.js``'s JSON: ``results`` with ``image`` (the full image), ``url`` (its page), ``thumbnail``,
    ``title``, sizes and ``source``; ``next`` (``i.js?...&s=<offset>``) while more remain."""
    chunk = results[offset : offset + page_size]
    items = []
    for r in chunk:
        item: dict[str, Any] = {"height": 480, "width": 640, "thumbnail": r.thumb, "url": r.page,
                                "title": r.title or f"{query} {r.rank}", "source": "Bing",
                                "image_token": hashlib.sha256(f"{query}/{r.rank}".encode()).hexdigest()}
        if r.full is not None:  # an unreadable result: no image
            item["image"] = r.full
        items.append(item)
    more = offset + page_size < len(results)
    following = "i.js?" + urlencode({"q": query, "o": "json", "p": "1", "s": offset + page_size, "u": "bing",
                                     "f": ",,,", "l": "us-en", "vqd": ddg_token(query)})
    return {"ads": None, "query": query, "queryEncoded": query.replace(" ", "+"), "response_type": "places",
            "results": items, "vqd": {query: ddg_token(query)}, **({"next": following} if more else {})}


# -- google ----------------------------------------------------------------------------------

_GOOGLE_PAGE = """<!doctype html>
<html itemscope="" itemtype="http://schema.org/SearchResultsPage" lang="en"><head><meta charset="UTF-8">
<title>{title} - Google Search</title></head>
<body><div id="islrg"><div class="islrc"></div></div>
<script nonce="fs">AF_initDataCallback({{key: 'ds:0', hash: '1', data:[null,null,[]], sideChannel: {{}}}});</script>
<script nonce="fs">AF_initDataCallback({{key: 'ds:1', hash: '2', data:{data}, sideChannel: {{}}}});</script>
</body></html>
"""

_GOOGLE_BASIC = """<!doctype html>
<html><head><meta charset="UTF-8"><title>{title} - Google Search</title></head>
<body><table class="images_table">{rows}</table>{more}</body></html>
"""

#: What Google answers instead of results: its EU consent page, its bot check, an old-browser page,
#: and the shell a client without JavaScript gets when no basic-HTML page is offered.
GOOGLE_BLOCKS = {
    "consent": '<form action="https://consent.google.com/save" method="POST"><div class="uScs5d">Before you '
               'continue to Google</div><button aria-label="Accept all">Accept all</button></form>',
    "captcha": '<form id="captcha-form" action="index" method="post"><div id="recaptcha" '
               'class="g-recaptcha"></div></form><div>Our systems have detected unusual traffic from your '
               'computer network.</div>',
    "update": '<div class="update-browser">Update your browser. Your browser isn\'t supported anymore. To '
              'continue your search, upgrade to a recent version.</div>',
    "shell": '<noscript><meta content="0;url=/httpservice/retry/enablejs" http-equiv="refresh"><div>Please '
             'click <a href="/httpservice/retry/enablejs">here</a> if you are not redirected within a few '
             'seconds.</div></noscript>',
}


def google_page(query: str, results: Sequence[Result], offset: int, page_size: int) -> bytes:
    """Google Images' JavaScript page (``/search?q=&tbm=isch&start=``): its results in script data.

    ``AF_initDataCallback({key: 'ds:1', ..., data: [...]})`` holds one entry per result,
    ``[1, [0, id, [thumbnail, h, w], [image, h, w], ..., {"2003": [null, id, page, title]}]]``
    (``img[1][3][0]`` is the full image, as open-source parsers read it); an unreadable result
    has no image triple.
    """
    entries = []
    for r in results[offset : offset + page_size]:
        image = [r.full, 480, 640] if r.full is not None else None
        meta = {"2003": [None, f"doc{r.rank}", r.page, r.title or f"{query} {r.rank}"]}
        entries.append([1, [0, f"id{r.rank}", [r.thumb, 194, 259], image, None, 0, "rgb(96,80,64)", None, 0, meta]])
    data = [None, None, [], None, None, None, None, None, None, None, None, None, [None, None, entries]]
    return _GOOGLE_PAGE.format(title=html.escape(query), data=json.dumps(data)).encode()


def google_basic_page(query: str, results: Sequence[Result], offset: int, page_size: int) -> bytes:
    """The basic-HTML page Google gives a client without JavaScript: ``/imgres?imgurl=&imgrefurl=`` links."""
    rows = []
    for r in results[offset : offset + page_size]:
        if r.full is None:
            rows.append(f'<tr><td><img src="{html.escape(r.thumb)}"></td></tr>')
            continue
        link = "/imgres?" + urlencode({"imgurl": r.full, "imgrefurl": r.page, "docid": f"doc{r.rank}"})
        rows.append(f'<tr><td><a href="{html.escape(link)}"><img src="{html.escape(r.thumb)}"></a></td></tr>')
    more = "" if offset + page_size >= len(results) else '<a class="frGj1b" href="#">Next &gt;</a>'
    return _GOOGLE_BASIC.format(title=html.escape(query), rows="".join(rows), more=more).encode()


def google_block(kind: str) -> bytes:
    """One of `GOOGLE_BLOCKS` as a whole page."""
    return f"<!doctype html><html><head><title>Google</title></head><body>{GOOGLE_BLOCKS[kind]}</body></html>".encode()
