"""Exporting a stored adapter into another tool's format, for
``GET /v1/adapters/{ref}/export`` (``steering_core.artifact.exports``, imported only when an
export runs: it needs torch)."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

from fastapi.responses import Response

from api.errors import ApiError
from api.services.adapters import verified_files
from registry.models import Adapter
from registry.settings import Settings
from steering_core.errors import ArtifactError

# the formats of steering_core.artifact.exports, known here without importing it (torch)
EXPORT_FORMATS: tuple[str, ...] = ("layer_tensors", "control_vector_gguf", "peft_lora")
CONFIG_FILE = "steering_config.json"


def check_format(export_format: str) -> None:
    """A 400 naming ``format`` unless it is one of :data:`EXPORT_FORMATS`."""
    if export_format not in EXPORT_FORMATS:
        raise ApiError(
            400,
            f"unknown export format {export_format!r}; use one of {', '.join(EXPORT_FORMATS)}",
            param="format",
        )


def exported_adapter(
    settings: Settings, row: Adapter, export_format: str, *, drop_layer_0: bool
) -> Response:
    """The adapter exported as a download: every stored file sha256-checked first (500 if one
    is not), a 503 without torch, a 400 for an export that does not apply."""
    paths = verified_files(settings, row)  # sha256 of every file, before any export
    exports = _exports_module()
    stem = f"{row.name}-v{row.version}-{export_format}"
    with tempfile.TemporaryDirectory(prefix="steer-export-") as tmp:
        options = {"drop_layer_0": drop_layer_0} if export_format == "control_vector_gguf" else {}
        try:
            result = _run(exports, row, paths, export_format, Path(tmp), options)
        except exports.ExportNotApplicableError as exc:
            raise ApiError(400, str(exc), param="format", code="export_not_applicable") from exc
        except ArtifactError as exc:
            raise ApiError(
                500,
                f"stored artifact of {row.id} cannot be exported: {exc}",
                type="server_error",
                code="artifact_corrupted",
            ) from exc
        except ImportError as exc:  # torch present, but gguf or peft missing
            raise ApiError(
                503,
                f"the {export_format} export is not available on this API process ({exc})",
                type="server_error",
                code="export_unavailable",
            ) from exc
        return _download(result, stem)


def _exports_module() -> ModuleType:
    """``steering_core.artifact.exports``, or a 503 where it cannot be imported (no torch)."""
    try:
        # torch: only this route and generation need it
        import steering_core.artifact.exports as exports
    except ImportError as exc:
        raise ApiError(
            503,
            f"exports are not available on this API process: they need torch (install the "
            f"[train] extra) ({exc})",
            type="server_error",
            code="export_unavailable",
        ) from exc
    return exports


def _run(
    exports: ModuleType,
    row: Adapter,
    paths: dict[str, Path],
    export_format: str,
    tmp: Path,
    options: dict[str, bool],
) -> Path:
    """Copy the artifact under ``tmp`` (its config first, checked before any tensor is copied)
    and run the export; return what it wrote (a directory, or the .gguf file)."""
    source = tmp / "artifact"
    source.mkdir()
    config_path = paths.get(CONFIG_FILE)
    if config_path is None:
        raise ArtifactError(f"adapter {row.id} has no {CONFIG_FILE}")
    shutil.copyfile(config_path, source / CONFIG_FILE)
    exports.check_export(source, export_format)  # before copying any tensor
    for name, path in paths.items():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return exports.run_export(export_format, source, tmp / "out", **options)


def _download(result: Path, stem: str) -> Response:
    """The .gguf file itself, or a ``.tar.gz`` of the export's directory under ``stem/``."""
    if result.is_file():
        content, filename = result.read_bytes(), f"{stem}.gguf"
        media_type = "application/octet-stream"
    else:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(p for p in result.rglob("*") if p.is_file()):
                tar.add(path, arcname=f"{stem}/{path.relative_to(result).as_posix()}")
        content, filename = buffer.getvalue(), f"{stem}.tar.gz"
        media_type = "application/gzip"
    return Response(
        content,
        media_type=media_type,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Content-SHA256": hashlib.sha256(content).hexdigest(),
        },
    )
