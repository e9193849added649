"""Full-text index over a folder of Markdown/text docs: SQLite FTS5, ranked by BM25.

Each doc is a `.md`, `.markdown` or `.txt` file with optional YAML front matter:

    ---
    title: Refunds and cancellations
    visibility: public          # public | internal; anything else (or missing) is internal
    url: https://help.example.com/refunds
    tags: [billing, refunds]
    ---
    body...

A doc's id is its path under the folder without the extension (`runbooks/redis-failover`).
Hidden files and folders, folders starting with `_`, and `README.*` files are not indexed;
nor is anything but a regular file inside the folder (symlinks are never followed). Public and
internal docs are ranked in separate indexes, so a public-only search's scores depend on
public docs alone.
The index lives in memory and is rebuilt whenever the folder's fingerprint (every doc's path,
inode, size and mtime) changes; the fingerprint is taken on each query, which costs one
`stat` per file. All methods are blocking: call them from a worker thread.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

log = logging.getLogger(__name__)

DOC_SUFFIXES = (".md", ".markdown", ".txt")
MAX_DOC_BYTES = 1_000_000
ALL_TABLE = "docs"  # every doc: what a token with docs:internal searches
PUBLIC_TABLE = "docs_public"  # public docs only, with statistics of their own
MAX_QUERY_TERMS = 24
SNIPPET_TOKENS = 28

Visibility = Literal["public", "internal"]

# Common words carry no signal and, OR-ed together, would match every doc.
STOPWORDS = frozenset(
    """a an and are as at be but by can could do does did for from had has have how i if in into
    is it its me my no not of on or our so that the their them then there these they this to
    us was we were what when where which who why will with would you your""".split()
)

_WORD = re.compile(r"\w+", re.UNICODE)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)", re.DOTALL)
_HEADING = re.compile(r"^#\s+(.+?)\s*#*\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Doc:
    id: str
    title: str
    visibility: Visibility
    url: str
    tags: tuple[str, ...]
    body: str


@dataclass(frozen=True)
class Hit:
    id: str
    title: str
    url: str
    snippet: str
    score: float
    tags: tuple[str, ...] = field(default=())


class DocsFolderMissing(Exception):
    """The docs folder does not exist."""


def fts_query(text: str) -> str | None:
    """User text -> a safe FTS5 MATCH expression (None when nothing is searchable).

    Every word becomes a quoted string, so FTS5 syntax in the input (quotes, `AND`, `OR`,
    `NEAR(...)`, `col:`, `*`, `^`, parentheses) is searched as plain words, never parsed.
    Terms are OR-ed: BM25 ranks docs matching more (and rarer) terms first.
    """
    words = [w.lower() for w in _WORD.findall(text)]
    terms: list[str] = []
    for word in words:
        if word in STOPWORDS or word in terms:
            continue
        terms.append(word)
        if len(terms) >= MAX_QUERY_TERMS:
            break
    if not terms:
        # Only stopwords (e.g. "how do I"): search them rather than nothing.
        terms = list(dict.fromkeys(words))[:MAX_QUERY_TERMS]
    if not terms:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)


def parse_doc(doc_id: str, text: str) -> Doc:
    """A doc from its file text. Front matter problems never make a doc public."""
    meta: dict[str, object] = {}
    body = text
    match = _FRONT_MATTER.match(text)
    if match:
        body = text[match.end():]
        try:
            loaded = yaml.safe_load(match.group(1))
        except yaml.YAMLError:
            log.warning("kb doc front matter is not valid YAML; treating it as internal",
                        extra={"doc_id": doc_id})
            loaded = {"visibility": "internal"}
        if isinstance(loaded, dict):
            meta = loaded
    body = body.strip()
    title = str(meta.get("title") or "").strip()
    if not title:
        heading = _HEADING.search(body)
        title = heading.group(1).strip() if heading else doc_id.rsplit("/", 1)[-1].replace("-", " ")
    visibility: Visibility = "public" if str(meta.get("visibility", "")).strip().lower() == "public" else "internal"
    url = str(meta.get("url") or "").strip() or f"kb://{doc_id}"
    raw_tags = meta.get("tags") or ()
    if isinstance(raw_tags, str):
        raw_tags = [t for t in re.split(r"[,\s]+", raw_tags) if t]
    tags = tuple(str(t).strip() for t in raw_tags if str(t).strip()) if isinstance(raw_tags, list | tuple) else ()
    return Doc(id=doc_id, title=title, visibility=visibility, url=url, tags=tags, body=body)


Fingerprint = tuple[tuple[str, int, int, int], ...]


class KnowledgeBase:
    """The docs folder and its FTS5 index. Thread-safe; every method blocks."""

    def __init__(self, docs_dir: Path) -> None:
        self.docs_dir = Path(docs_dir)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._fingerprint: Fingerprint | None = None
        self.builds = 0  # how many times the index was (re)built; tests and metrics read it

    # -- files ---------------------------------------------------------------------------

    def _files(self) -> list[tuple[str, Path, os.stat_result]]:
        root = self.docs_dir
        if not root.is_dir():
            raise DocsFolderMissing(str(root))
        real_root = root.resolve()
        found: list[tuple[str, Path, os.stat_result]] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "_")))
            for name in sorted(filenames):
                if (
                    name.startswith(".")
                    or not name.lower().endswith(DOC_SUFFIXES)
                    or name.lower().startswith("readme.")
                ):
                    continue
                path = Path(dirpath) / name
                try:
                    # lstat: a symlink is never followed, so a link to /etc/passwd or to a doc
                    # outside the folder is not served; only regular files inside it are.
                    st = path.lstat()
                except OSError:
                    continue  # vanished between listing and stat
                if not stat.S_ISREG(st.st_mode) or not _inside(path, real_root):
                    log.warning("kb entry is not a regular file inside the folder; skipped",
                                extra={"path": path.relative_to(root).as_posix()})
                    continue
                rel = path.relative_to(root).as_posix()
                doc_id = rel.rsplit(".", 1)[0]
                found.append((doc_id, path, st))
        return found

    def _fingerprint_of(self, files: list[tuple[str, Path, os.stat_result]]) -> Fingerprint:
        return tuple((doc_id, st.st_ino, st.st_size, st.st_mtime_ns) for doc_id, _, st in files)

    # -- index ---------------------------------------------------------------------------

    def _build(self, files: list[tuple[str, Path, os.stat_result]]) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        # Two indexes, one per audience: BM25's statistics (document count, average length,
        # term frequencies) are those of the table searched, so a public-only caller's scores
        # must come from a table holding public documents only, or they would reveal how often
        # a word occurs in internal ones.
        for table in (ALL_TABLE, PUBLIC_TABLE):
            conn.execute(
                f"CREATE VIRTUAL TABLE {table} USING fts5("
                "doc_id UNINDEXED, visibility UNINDEXED, url UNINDEXED, title, tags, body, "
                "tokenize = 'porter unicode61 remove_diacritics 2')"
            )
        seen: set[str] = set()
        rows = []
        for doc_id, path, st in files:
            if doc_id in seen:  # same stem, two suffixes: first one wins
                log.warning("kb doc id used twice; keeping the first", extra={"doc_id": doc_id})
                continue
            if st.st_size > MAX_DOC_BYTES:
                log.warning("kb doc too large; skipped", extra={"doc_id": doc_id, "bytes": st.st_size})
                continue
            try:
                text = _read_regular(path, st)
            except OSError:
                continue
            seen.add(doc_id)
            doc = parse_doc(doc_id, text)
            rows.append((doc.id, doc.visibility, doc.url, doc.title, "\n".join(doc.tags), doc.body))
        insert = "INSERT INTO {} (doc_id, visibility, url, title, tags, body) VALUES (?, ?, ?, ?, ?, ?)"
        conn.executemany(insert.format(ALL_TABLE), rows)
        conn.executemany(insert.format(PUBLIC_TABLE), [r for r in rows if r[1] == "public"])
        conn.commit()
        self.builds += 1
        log.info("kb index built", extra={"docs": len(rows), "builds": self.builds})
        return conn

    def _fresh(self) -> sqlite3.Connection:
        """The index, rebuilt first if any doc file changed. Call with the lock held."""
        files = self._files()
        fingerprint = self._fingerprint_of(files)
        if self._conn is None or fingerprint != self._fingerprint:
            conn = self._build(files)
            if self._conn is not None:
                self._conn.close()
            self._conn, self._fingerprint = conn, fingerprint
        return self._conn

    def refresh(self) -> None:
        with self._lock:
            self._fresh()

    # -- queries -------------------------------------------------------------------------

    def search(self, query: str, *, limit: int = 5, include_internal: bool = False) -> list[Hit]:
        expression = fts_query(query)
        if expression is None:
            return []
        table = ALL_TABLE if include_internal else PUBLIC_TABLE
        with self._lock:
            conn = self._fresh()
            rows = conn.execute(
                "SELECT doc_id, title, url, tags, "
                f"snippet({table}, 5, '', '', ' … ', ?), "
                f"bm25({table}, 0.0, 0.0, 0.0, 8.0, 4.0, 1.0) AS rank "
                f"FROM {table} WHERE {table} MATCH ? "
                "ORDER BY rank LIMIT ?",
                (SNIPPET_TOKENS, expression, limit),
            ).fetchall()
        return [
            Hit(id=r[0], title=r[1], url=r[2], tags=_tags(r[3]), snippet=_clean_snippet(r[4]),
                score=round(-float(r[5]), 4))
            for r in rows
        ]

    def get(self, doc_id: str, *, include_internal: bool = False) -> Doc | None:
        with self._lock:
            conn = self._fresh()
            row = conn.execute(
                f"SELECT doc_id, title, visibility, url, tags, body FROM {ALL_TABLE} WHERE doc_id = ?",
                (doc_id.strip().strip("/"),),
            ).fetchone()
        if row is None or (row[2] != "public" and not include_internal):
            return None
        return Doc(id=row[0], title=row[1], visibility=row[2], url=row[3], tags=_tags(row[4]),
                   body=row[5])

    def count(self, *, include_internal: bool = True) -> int:
        with self._lock:
            conn = self._fresh()
            sql = f"SELECT count(*) FROM {ALL_TABLE if include_internal else PUBLIC_TABLE}"
            return int(conn.execute(sql).fetchone()[0])


def _inside(path: Path, real_root: Path) -> bool:
    try:
        path.resolve().relative_to(real_root)
    except (ValueError, OSError):
        return False
    return True


def _read_regular(path: Path, listed: os.stat_result) -> str:
    """The file's text, refusing a symlink swapped in since the listing (O_NOFOLLOW) and a file
    that is no longer the one listed."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_ino != listed.st_ino:
            raise OSError("doc changed while reading")
        data = handle.read(MAX_DOC_BYTES + 1)
    return data.decode("utf-8", errors="replace")


def _clean_snippet(snippet: str) -> str:
    return re.sub(r"\s+", " ", snippet).strip()


def _tags(stored: str) -> tuple[str, ...]:
    return tuple(t for t in stored.split("\n") if t)
