#!/usr/bin/env python3
# Regenerates the shipped public-domain corpus in data/corpus/ from Debian packages (see
# data/corpus/README.md for sources and licences). Standard library only; needs `apt-get` and `dpkg-deb`
# (any Debian 12 machine; root is not needed: packages are downloaded and unpacked, not installed).
#
#   python3 scripts/data/make_corpus.py            # rewrite data/corpus/*.gz
#   python3 scripts/data/make_corpus.py --verify   # rebuild in a temporary directory and compare
#
# What it writes (gzip with a zero timestamp, so the bytes depend only on the package contents):
#   kjv.txt.gz       prose: the King James Bible, one document per chapter (1,189), the chapter title on the
#                    first line and one verse per line after it (verse numbers dropped); documents are
#                    separated by one blank line (jetmoe-prepare's plain-text format)
#   sqlite.jsonl.gz  code: SQLite's public-domain C sources sqlite3.h, sqlite3ext.h (libsqlite3-dev) and the
#                    LEMON parser template lempar.c (lemon), cut into documents of about 80-150 lines at
#                    blank lines; one JSON object per line: {"text": ..., "file": ..., "first_line": ...}
import argparse
import gzip
import io
import json
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "data", "corpus"))

PACKAGES = ["bible-kjv", "bible-kjv-text", "libsqlite3-dev", "lemon"]
CODE_FILES = [  # (package, path inside the package)
    ("libsqlite3-dev", "usr/include/sqlite3.h"),
    ("libsqlite3-dev", "usr/include/sqlite3ext.h"),
    ("lemon", "usr/share/lemon/lempar.c"),
]
CHUNK_MIN_LINES, CHUNK_MAX_LINES = 80, 150


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def fetch_packages(work):
    """Downloads and unpacks PACKAGES into work/root; returns {package: version}."""
    os.chmod(work, 0o755)
    debs = os.path.join(work, "debs")
    os.makedirs(debs)
    os.chmod(debs, 0o777)  # apt drops privileges to _apt for the download when it can
    run(["apt-get", "download", *PACKAGES], cwd=debs, stdout=subprocess.DEVNULL)
    versions = {}
    root = os.path.join(work, "root")
    for name in sorted(os.listdir(debs)):
        path = os.path.join(debs, name)
        pkg = run(["dpkg-deb", "-f", path, "Package"], capture_output=True, text=True).stdout.strip()
        ver = run(["dpkg-deb", "-f", path, "Version"], capture_output=True, text=True).stdout.strip()
        versions[pkg] = ver
        run(["dpkg-deb", "-x", path, root])
    missing = [p for p in PACKAGES if p not in versions]
    if missing:
        sys.exit(f"make_corpus: apt-get download did not fetch {missing}")
    return root, versions


def kjv_documents(root):
    """The whole KJV as printed by the package's `bible` program: one document per chapter."""
    text = run([os.path.join(root, "usr/bin/bible"), "-p", os.path.join(root, "usr/lib"), "-l100000",
                "Gen1:1-Rev22:21"], capture_output=True, text=True).stdout
    docs, current = [], None
    verse = re.compile(r"^\s+\d+ (.*)$")
    for line in text.splitlines():
        if not line.strip():
            continue
        m = verse.match(line)
        if m:
            if current is None:
                sys.exit(f"make_corpus: verse before any chapter title: {line!r}")
            current.append(m.group(1).rstrip())
        else:  # "Genesis 1"
            current = [line.strip()]
            docs.append(current)
    if len(docs) != 1189:
        sys.exit(f"make_corpus: expected the 1,189 chapters of the KJV, found {len(docs)}")
    return ["\n".join(d) for d in docs]


def code_documents(root):
    """Cuts each source file at a blank line once a chunk has CHUNK_MIN_LINES lines (or anywhere at MAX)."""
    records = []
    for _, rel in CODE_FILES:
        with open(os.path.join(root, rel), encoding="utf-8") as f:
            lines = f.read().splitlines()
        start = 0
        for i, line in enumerate(lines + [""]):
            n = i - start
            at_end = i == len(lines)
            if at_end or (n >= CHUNK_MIN_LINES and not line.strip()) or n >= CHUNK_MAX_LINES:
                chunk = "\n".join(lines[start:i]).strip("\n")
                if chunk.strip():
                    records.append({"text": chunk, "file": os.path.basename(rel), "first_line": start + 1})
                start = i + 1 if not line.strip() else i
    return records


def gzip_bytes(text):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    return buf.getvalue()


def build(work):
    root, versions = fetch_packages(work)
    prose = kjv_documents(root)
    code = code_documents(root)
    files = {
        "kjv.txt.gz": gzip_bytes("\n\n".join(prose) + "\n"),
        "sqlite.jsonl.gz": gzip_bytes("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in code)),
    }
    summary = (f"prose: {len(prose)} documents, {sum(len(d) for d in prose)} characters; "
               f"code: {len(code)} documents, {sum(len(r['text']) for r in code)} characters; "
               f"packages: " + ", ".join(f"{p} {v}" for p, v in sorted(versions.items())))
    return files, summary


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--verify", action="store_true", help="rebuild and compare with data/corpus, write nothing")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        files, summary = build(work)
    print("make_corpus:", summary)
    if args.verify:
        bad = []
        for name, data in files.items():
            path = os.path.join(OUT_DIR, name)
            if not os.path.exists(path) or open(path, "rb").read() != data:
                bad.append(name)
        if bad:
            sys.exit(f"make_corpus: differs from data/corpus: {bad} (other package versions?)")
        print("make_corpus: data/corpus is reproduced exactly")
        return
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(OUT_DIR, name), "wb") as f:
            f.write(data)
        print(f"make_corpus: wrote data/corpus/{name} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
