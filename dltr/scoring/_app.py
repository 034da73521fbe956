"""The scoring service (FastAPI): ``POST /predict``, ``GET /models``, ``GET /health``.

Request bodies larger than ``ServeLimits.max_request_mb`` are refused by an ASGI middleware from
the ``Content-Length`` header, or while streaming when there is none, before multipart parsing.
Each request gets a private work folder under ``work_dir`` that is removed in ``finally``. Log lines
carry a request number, status and timings only (no file name, no clinical value, no patient id).
(No ``from __future__ import annotations`` here: FastAPI resolves the endpoint annotations, whose
types are imported inside ``create_app``.)
"""

import hmac
import json
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from dltr.core.exceptions import DltrError
from dltr.core.vocabulary import PRIMARY_HEAD

from ._scorer import Scorer
from ._upload import ServeLimits, UploadError, build_upload_cohort

__all__ = ["create_app"]

log = logging.getLogger("dltr.serve")
_PART_SUFFIXES = (".nii.gz", ".nii")


class _BodyLimit:
    """ASGI middleware: 413 for a body over ``limit`` bytes, decided before the app reads it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _reject(send, 413, f"request body of {declared.decode(errors='replace')} bytes exceeds "
                                            f"the bound of {self.limit} bytes")
        seen = 0

        async def counted():
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                raise UploadError(f"request body exceeds the bound of {self.limit} bytes", 413)
            return msg

        return await self.app(scope, counted, send)


async def _reject(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _part_name(filename: str | None) -> str | None:
    low = (filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1].lower()
    for suf in _PART_SUFFIXES:
        if low.endswith(suf):
            return low[: -len(suf)]
    return None


def create_app(store_root: str | Path, *, head: str = PRIMARY_HEAD, token: str | None = None,
               limits: ServeLimits | None = None, work_dir: str | Path | None = None, max_concurrent: int = 2):
    """The FastAPI application serving ``head`` of the store (models loaded once, here)."""
    from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
    from fastapi.responses import JSONResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    limits = limits or ServeLimits()
    scorer = Scorer(store_root, head, work_dir=work_dir)
    gate = threading.BoundedSemaphore(max_concurrent)
    counter = {"n": 0}
    bearer = HTTPBearer(auto_error=False)

    def auth(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if cred is None or not hmac.compare_digest(cred.credentials.encode(), token.encode()):
            raise HTTPException(401, "a bearer token is required (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})

    app = FastAPI(title="dltr scoring service", version="1",
                  description="Response to the first TACE from pretreatment MRI + clinical data, scored with "
                              f"the registered head {scorer.lineage.head}@{scorer.lineage.head_version}.")
    app.add_middleware(_BodyLimit, limit=int(limits.max_request_mb * 1e6))

    @app.exception_handler(UploadError)
    async def _upload_error(_request: Request, e: UploadError):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness and the head being served."""
        return {"status": "ok", "head": scorer.lineage.head, "head_version": scorer.lineage.head_version}

    @app.get("/models", dependencies=[Depends(auth)])
    def models() -> dict[str, Any]:
        """Registered heads with their metrics, and which one this service scores with."""
        from models.heads import HeadRegistry

        reg = HeadRegistry(scorer.store_root)
        out = []
        for name in reg.names():
            for v in reg.versions(name):
                m = reg.meta(name, v)
                out.append({"name": name, "version": v, "latest": v == reg.latest(name), "kind": m.get("kind"),
                            "metrics": m.get("metrics"), "cutoff": m.get("cutoff"),
                            "feature_set_version": m.get("lineage", {}).get("feature_set_version")})
        return {"serving": scorer.lineage.to_dict(), "heads": out, "limits": limits.to_dict()}

    @app.post("/predict", dependencies=[Depends(auth)])
    def predict(clinical: str = Form(..., description="JSON object: center, tace_date, the clinical covariates "
                                                      "(null where unknown) and optional labs [{name, value, "
                                                      "measured_at, recorded_at, unit}]"),
                files: list[UploadFile] | None = File(None, description="<phase>.nii[.gz] files and mask.nii[.gz]"),
                dicom_zip: UploadFile | None = File(None, description="zip of <phase>/ DICOM series folders "
                                                                      "(and mask.nii.gz or a mask/ folder)")
                ) -> dict[str, Any]:
        """Score one patient; returns what `dltr predict --json` returns."""
        with gate:
            counter["n"] += 1
            rid = counter["n"]
            work = scorer.new_work()
            try:
                staged = _stage_upload(work, clinical, files or [], dicom_zip, scorer, limits)
                pred = scorer.score_staged(staged, work)
            except UploadError:
                log.info("request %d: refused", rid)
                raise
            except DltrError as e:
                log.info("request %d: input could not be scored (%s)", rid, type(e).__name__)
                raise UploadError(f"the upload could not be scored: {e}", 422) from None
            finally:
                shutil.rmtree(work, ignore_errors=True)
            log.info("request %d: scored in %.2f s", rid, pred.timings["total_s"])
            return pred.to_dict()

    app.state.scorer = scorer
    return app


def _stage_upload(work: Path, clinical: str, files, dicom_zip, scorer: Scorer, limits: ServeLimits):
    try:
        data = json.loads(clinical)
    except (ValueError, TypeError):
        raise UploadError("clinical: not valid JSON; give a JSON object of clinical fields") from None
    (work / "upload").mkdir()
    parts: dict[str, Path] = {}
    for i, f in enumerate(files):
        name = _part_name(f.filename)
        if name is None or name in parts:
            raise UploadError(f"files[{i}]: name it <phase>.nii.gz (or .nii) or mask.nii.gz, once per part")
        parts[name] = work / "upload" / f"{i:03d}.nii{'.gz' if (f.filename or '').lower().endswith('.gz') else ''}"
        with parts[name].open("wb") as out:
            shutil.copyfileobj(f.file, out)
    zpath = None
    if dicom_zip is not None:
        zpath = work / "upload" / "upload.zip"
        with zpath.open("wb") as out:
            shutil.copyfileobj(dicom_zip.file, out)
    lin = scorer.lineage
    return build_upload_cohort(work, parts, zpath, data, tuple(lin.preprocess["phases"]),
                               tuple(c for c in lin.clinical_selected if not c.startswith("lab_")), limits)
