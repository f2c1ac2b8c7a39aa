"""Storing a verified artifact in the registry's adapter store, with sha256 per file."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from steering_core.hashing import sha256_file


def store_artifact(source: Path, target: Path) -> tuple[dict[str, str], str, int]:
    """Copy ``source`` to ``target`` (via a staging name); return (file -> sha256, overall
    sha256, bytes). On any error nothing is left at ``target``."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        shutil.copytree(source, staging)
        files = {
            str(p.relative_to(staging)): sha256_file(p)
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        size = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    overall = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in files.items()).encode()).hexdigest()
    return files, overall, size
