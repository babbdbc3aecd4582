"""Download path on loopback: our Downloader vs img2dataset on the same URLs from the demo web, in one run.

Builds a URL list from the demo web's ground truth (kinds that download as valid images:
``orig``, ``resized``, ``scene`` by default) over the lfw-dev names in sorted order, starts
the demo web in a subprocess and fetches every URL once (the demo web renders and caches
images on first request, so both clients then see the same warm server). Then, for each
concurrency W, it times (best of ``--repeat``, alternating the two clients):

- ours: ``Downloader(DownloadLimits(concurrency=W, per_host=W, retries=R, timeout_s=T))``,
  ``fetch_all(urls)`` in this process, timed from creating the downloader to closing it;
  every body is sha256-hashed and fully decoded (check_image);
- img2dataset: its CLI in a subprocess (``--thread_count W --processes_count 1 --resize_mode
  no --disable_all_reencoding True --extract_exif False --retries R --timeout T``), timed
  from starting the subprocess to its exit, start-up included; it hashes (sha256) but does
  not decode (``--i2d-decode``: ``--skip_reencode True`` instead, so it decodes with cv2 as
  we do with Pillow). Its start-up alone is timed with the same command on the first 10 URLs
  (in the same repeats) and printed separately.

img2dataset lives in its own virtual environment, created on first use with
``python3.11 -m venv bench/.cache/venv-img2dataset`` + ``pip install img2dataset`` (never in
the project's dependencies; bench/.cache/ is git-ignored).

Prints images/s for both, the ratio ours / img2dataset per W, and whether both accepted the
same images (with parquet output: the same set of (URL, sha256); otherwise the same count;
exit status 1 when they did not). Run:

    .venv/bin/python bench/bench_download.py [--urls 3000] [--concurrency 16 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from urllib.parse import urljoin

import pyarrow.parquet as pq

from facescale.demoweb import DemoWeb, truth
from facescale.scraper.downloader import Downloader, DownloadLimits

REPO = Path(__file__).resolve().parents[1]
I2D_VENV = REPO / "bench" / ".cache" / "venv-img2dataset"
COLUMNS = ["url", "sha256", "status"]  # of img2dataset's parquet output (failures are rows too)


def build_urls(photos: Path, base_url: str, kinds: set[str], count: int) -> list[str]:
    """The first ``count`` URLs of the given kinds, walking the people in sorted order."""
    names = sorted(p.name.replace("_", " ") for p in photos.iterdir() if p.is_dir())
    urls: list[str] = []
    for name in names:
        urls += [urljoin(base_url + "/", row["full"]) for row in truth(photos, name) if row["kind"] in kinds]
        if len(urls) >= count:
            break
    return urls[:count]


def ensure_img2dataset(python: str) -> tuple[Path, str]:
    """The img2dataset executable of the bench venv (created on first use) and its version."""
    exe = I2D_VENV / "bin" / "img2dataset"
    if not exe.exists():
        print(f"creating {I2D_VENV.relative_to(REPO)} ({python} -m venv; pip install img2dataset) ...", flush=True)
        subprocess.run([python, "-m", "venv", str(I2D_VENV)], check=True)
        subprocess.run([str(I2D_VENV / "bin" / "pip"), "install", "-q", "img2dataset"], check=True)
    version = subprocess.run(
        [str(I2D_VENV / "bin" / "python"), "-c", "import importlib.metadata as m; print(m.version('img2dataset'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return exe, version


Fetched = frozenset[tuple[str, str]]  # (url, sha256) of every accepted image


def run_ours(urls: list[str], concurrency: int, per_host: int, retries: int, timeout_s: float) -> tuple[float, Fetched]:
    """Seconds for our Downloader to fetch ``urls`` (start to close) and the images it accepted."""
    limits = DownloadLimits(concurrency=concurrency, per_host=per_host, retries=retries, timeout_s=timeout_s)
    start = time.perf_counter()
    with Downloader(limits) as downloader:
        results = downloader.fetch_all(urls)
    seconds = time.perf_counter() - start
    return seconds, frozenset((r.url, r.image_id or "") for r in results if r.ok)


def run_img2dataset(
    exe: Path,
    url_file: Path,
    *,
    out: Path,
    threads: int,
    retries: int,
    timeout_s: float,
    output_format: str,
    decode: bool,
) -> tuple[float, Fetched | int]:
    """Seconds for the img2dataset subprocess (start to exit) and the images it saved.

    With parquet output, the (url, sha256) of each saved image; otherwise only their count.
    """
    shutil.rmtree(out, ignore_errors=True)
    cmd = [
        str(exe), f"--url_list={url_file}", "--input_format=txt", f"--output_folder={out}",
        f"--output_format={output_format}", "--resize_mode=no",
        "--skip_reencode=True" if decode else "--disable_all_reencoding=True",
        "--extract_exif=False", "--processes_count=1", f"--thread_count={threads}",
        f"--timeout={max(1, round(timeout_s))}", f"--retries={retries}", "--enable_wandb=False",
        "--number_sample_per_shard=100000",  # one shard: one process does all (--incremental_mode=overwrite
        # would be the obvious choice, but 1.47.0 deletes its own _tmp folder with it; out/ is removed instead)
    ]  # fmt: skip
    env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    log_path = out.with_suffix(".log")
    start = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False, timeout=900)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log_path.read_text()[-3000:]
        raise SystemExit(f"img2dataset exited with {proc.returncode}:\n{tail}")
    if output_format == "parquet":
        rows = [r for p in sorted(out.glob("*.parquet")) for r in pq.read_table(p, columns=COLUMNS).to_pylist()]
        return seconds, frozenset((r["url"], r["sha256"]) for r in rows if r["status"] == "success")
    return seconds, sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared" / "data" / "lfw-dev")
    parser.add_argument("--urls", type=int, default=3000, help="URLs in the list")
    parser.add_argument("--kinds", default="orig,resized,scene", help="demo-web result kinds to include")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64], help="W: requests in flight")
    parser.add_argument("--per-host", type=int, default=None, help="our per-host limit (default: W, like img2dataset)")
    parser.add_argument("--retries", type=int, default=0, help="retries, both clients")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per attempt, both clients")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per client and W; the best counts")
    parser.add_argument("--i2d-output", default="parquet", choices=["parquet", "files", "webdataset"])
    parser.add_argument("--i2d-decode", action="store_true",
                        help="let img2dataset decode every image (cv2; --skip_reencode) instead of "
                        "--disable_all_reencoding, so both clients decode")  # fmt: skip
    parser.add_argument("--python", default="python3.11", help="interpreter for img2dataset's venv")
    args = parser.parse_args()
    exe, version = ensure_img2dataset(args.python)
    work = Path(tempfile.mkdtemp(prefix="facescale-bench-dl-"))
    mismatches = []
    try:
        with DemoWeb(args.photos) as web:
            urls = build_urls(args.photos, web.url, set(args.kinds.split(",")), args.urls)
            url_file, small_file = work / "urls.txt", work / "urls10.txt"
            url_file.write_text("\n".join(urls) + "\n")
            small_file.write_text("\n".join(urls[:10]) + "\n")

            warm_s, warm_ok = run_ours(urls, 16, 16, 1, 60.0)
            print(f"{len(urls)} URLs ({args.kinds}) from {args.photos.name}; warm-up pass: {len(warm_ok)} accepted "
                  f"in {warm_s:.1f} s (the demo web renders and caches each image once)")  # fmt: skip
            i2d_work = "cv2 decode, no re-encode" if args.i2d_decode else "no decode"
            print(f"img2dataset {version} (output {args.i2d_output}, {i2d_work}, sha256); ours: sha256 + full decode")

            i2d = partial(
                run_img2dataset, exe, out=work / "i2d", retries=args.retries, timeout_s=args.timeout,
                output_format=args.i2d_output, decode=args.i2d_decode,
            )  # fmt: skip
            print(f"{'W':>4} {'ours img/s':>11} {'img2dataset img/s':>18} {'ours/i2d':>9} {'i2d start-up s':>15} "
                  f"{'i2d w/o start-up':>17} {'ours/that':>10}   accepted (ours, i2d); seconds")  # fmt: skip
            for width in args.concurrency:
                per_host = args.per_host or width
                ours_s = i2d_s = overhead = float("inf")
                for _ in range(args.repeat):
                    seconds, ours_got = run_ours(urls, width, per_host, args.retries, args.timeout)
                    ours_s = min(ours_s, seconds)
                    overhead = min(overhead, i2d(small_file, threads=width)[0])
                    seconds, i2d_got = i2d(url_file, threads=width)
                    i2d_s = min(i2d_s, seconds)
                ours_n = len(ours_got)
                i2d_n = i2d_got if isinstance(i2d_got, int) else len(i2d_got)
                same = ours_got == i2d_got if not isinstance(i2d_got, int) else ours_n == i2d_n
                ours_rate, i2d_rate = ours_n / ours_s, i2d_n / i2d_s
                if i2d_s - overhead > 0.25 * i2d_s:  # else start-up is most of the run: noise would dominate
                    net_rate = i2d_n / (i2d_s - overhead)
                    net = f"{net_rate:>17.0f} {ours_rate / net_rate:>9.2f}x"
                else:
                    net = f"{'n/a':>17} {'n/a':>10}"
                print(f"{width:>4} {ours_rate:>11.0f} {i2d_rate:>18.0f} {ours_rate / i2d_rate:>8.2f}x "
                      f"{overhead:>15.2f} {net}   {ours_n}, {i2d_n} of {len(urls)}; {ours_s:.2f}, {i2d_s:.2f}",
                      flush=True)  # fmt: skip
                if not same:
                    mismatches.append(width)
            print(f"per-host limit (ours): {args.per_host or 'W'}; retries {args.retries}; timeout {args.timeout:g} s; "
                  f"best of {args.repeat}")  # fmt: skip
            print("img2dataset img/s includes its start-up; 'i2d start-up s': the same command on the first 10 URLs "
                  "(best of the same repeats); 'w/o start-up' subtracts it (a reference only)")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if mismatches:
        print(f"MISMATCH: the clients accepted different images at W={mismatches}")
        sys.exit(1)
    what = "URLs and sha256" if args.i2d_output == "parquet" else "number of images"
    print(f"both clients accepted the same {what} (last run of each W): yes")


if __name__ == "__main__":
    main()
