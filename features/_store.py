"""``FeatureStore``: the store folder's Python API (docs/architecture.md, "Store layout")."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dltr.core.exceptions import StoreError
from dltr.core.hashing import file_sha256
from dltr.core.io import atomic_file
from dltr.core.layout import StoreLayout
from dltr.core.lock import WriterLock, try_lock
from dltr.core.vocabulary import parse_ref
from features._aggregates import embedding_means
from features._catalog import NAME_RE, build_catalog, ident
from features._frame_embed import align_embeddings, read_embeddings
from features._frames import (
    BASE_COLUMNS,
    TrainingFrame,
    check_request,
    distinct_names,
    embedding_matrix,
    frame_sql,
    table_hash,
)
from features._registry import FeatureSetVersion, Registry, now_iso
from features._rows import check_rows, conform, embedding_dim, feature_schema, is_packed, unpacked
from features._session import CatalogSession
from features._sql import on_catalog, run_read_only, run_write
from features._writer import FeatureWriter, _existing, commit_version, version_id_of


class FeatureStore:
    """A store folder: Parquet feature sets and tables, the registry and the DuckDB catalog (``self.layout``)."""

    def __init__(self, root: str | Path, *, create: bool = True):
        root = Path(root)
        if not root.exists():
            if not create:
                raise StoreError(f"{root}: no such store folder; create it with FeatureStore(root)")
            root.mkdir(parents=True)
        self.root = root
        self.layout = StoreLayout(root)
        self._session = CatalogSession(root)
        if not StoreLayout.of(root).catalog.exists():
            lock = try_lock(root, "create the catalog")
            if lock is not None:
                try:
                    build_catalog(root, Registry.load(root), StoreLayout.of(root).catalog)
                finally:
                    lock.release()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r})"

    def close(self) -> None:
        """Close the cached read-only catalog session (reopened on the next query)."""
        self._session.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def catalog_path(self) -> Path:
        return self.layout.catalog

    def registry(self) -> Registry:
        return Registry.load(self.root)

    # -- listing ---------------------------------------------------------------------------------
    def feature_sets(self) -> list[str]:
        return self.registry().feature_sets()

    def tables(self) -> list[str]:
        return sorted(self.registry().tables())

    def versions(self, name: str) -> list[FeatureSetVersion]:
        """Published versions of ``name``, oldest first."""
        return self.registry().versions(name)

    def resolve(self, ref: str, version: str | None = None) -> FeatureSetVersion:
        return self.registry().resolve(ref, version)

    def describe(self, name: str) -> dict[str, Any]:
        reg = self.registry()
        if parse_ref(name, what="feature set")[0] in reg.feature_sets():
            v = reg.resolve(name)
            return {"kind": "feature_set", **v.to_dict(), "ref": v.ref, "latest": reg.resolve(v.name).version_id,
                    "versions": [x.version_id for x in reg.versions(v.name)],
                    "views": [v.name, f"{v.name}__{v.version_id}", f'"{v.name}@{v.version_id}"']}
        return {"kind": "table", "name": name, **reg.table_entry(name)}

    # -- writing feature sets --------------------------------------------------------------------
    def known_patients(self, reg: Registry | None = None) -> set[str] | None:
        """patient_ids of the registered clinical table (None when none is registered)."""
        tables = (reg or self.registry()).tables()
        if "clinical" not in tables:
            return None
        return set(pq.read_table(self.root / tables["clinical"]["path"], columns=["patient_id"]).column(0).to_pylist())

    def feature_writer(self, name: str, version_id: str, producer: str, lineage: dict[str, Any],
                       dim: int) -> FeatureWriter:
        """A staged, resumable writer (takes the writer lock; ``publish`` or ``close`` releases it)."""
        return FeatureWriter(self.root, name, version_id, producer, lineage, dim, known=self.known_patients())

    def publish(self, name: str, table: pa.Table, producer: str, lineage: dict[str, Any], *,
                allow_partial: bool = False) -> FeatureSetVersion:
        """Validate ``table`` and publish it as one version (a no-op, ``new=False``, if it exists)."""
        if not NAME_RE.match(name):
            raise StoreError(f"feature-set name {name!r} is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)")
        vid = version_id_of(name, producer, lineage)
        with WriterLock(self.root, f"publish {name}@{vid}"):
            reg = self.registry()
            if reg.has_version(name, vid):
                return _existing(reg, name, vid)
            what = f"{name}@{vid}"
            rows = conform(table, None, what, packed=is_packed(lineage))
            if rows.num_rows == 0:
                raise StoreError(f"{what}: no rows to publish")
            check_rows(rows, what, known=self.known_patients(reg))
            return commit_version(self.root, rows, name=name, version_id=vid, producer=producer,
                                  lineage=dict(lineage), dim=embedding_dim(rows.schema.field("embedding").type),
                                  status="partial" if allow_partial else "published", reg=reg)

    # -- tables ----------------------------------------------------------------------------------
    def write_table(self, name: str, table: pa.Table, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write (or replace) a result table ``tables/<name>.parquet``; visible as view ``name``."""
        return self._write_tables({name: (table, lineage or {})})[name]

    def _write_tables(self, tables: dict[str, tuple[pa.Table, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
        for name in tables:
            if not NAME_RE.match(name):
                raise StoreError(f"table name {name!r} is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)")
        with WriterLock(self.root, f"write tables {sorted(tables)}"):
            reg = self.registry()
            entries = {}
            for name, (table, lineage) in tables.items():
                path = StoreLayout.of(self.root).table(name)
                with atomic_file(path) as f:
                    pq.write_table(table, f)
                entries[name] = {"path": path.relative_to(self.root).as_posix(), "created_at": now_iso(),
                                 "row_count": table.num_rows, "sha256": file_sha256(path),
                                 "schema": [{"name": f.name, "type": str(f.type)} for f in table.schema],
                                 "lineage": lineage}
                reg.set_table(name, entries[name])
            reg.commit()
            build_catalog(self.root, reg, self.catalog_path)
        return entries

    def table(self, name: str) -> pa.Table:
        """A registered table (cohort or result table) as Arrow."""
        entry = self.registry().table_entry(name)
        return pq.read_table(self.root / entry["path"])

    def add_cohort(self, cohort: str | Path | Any, *, pseudonym_key: str | None = None) -> dict[str, dict[str, Any]]:
        """Register clinical, labs, expression (and ``ingest/studies.parquet`` if present) from a cohort
        folder (loaded and validated with ``dltr.cohort.load_cohort``) or an already loaded Cohort;
        ``pseudonym_key``: the key ingest was given (patient ids become the same keyed pseudonyms)."""
        from features._cohort import cohort_tables

        if isinstance(cohort, (str, Path)):
            from dltr.cohort import load_cohort

            cohort = load_cohort(cohort)
        return self._write_tables(cohort_tables(cohort, self.root, pseudonym_key=pseudonym_key))

    # -- reading ---------------------------------------------------------------------------------
    def read(self, ref: str, version: str | None = None, columns: list[str] | None = None) -> pa.Table:
        """A feature-set version (``name``, ``name@version`` or ``read(name, version)``) or a table."""
        reg = self.registry()
        name, _ = parse_ref(ref, version, what='feature set')
        if name in reg.tables() and name not in reg.feature_sets():
            return pq.read_table(self.root / reg.table_entry(name)["path"], columns=columns)
        v = reg.resolve(ref, version)
        files = sorted((self.root / v.path).glob("center=*/*.parquet"))
        if not files:
            raise StoreError(f"{v.ref}: registered but its files are missing under {self.root / v.path}")
        table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
        if "embedding" in table.column_names:  # a packed version: the same floats
            table = table.set_column(table.column_names.index("embedding"), "embedding",
                                     unpacked(table.column("embedding")))
        schema = feature_schema(v.dim)
        return table.cast(pa.schema([schema.field(n) for n in table.column_names]))

    def sql(self, query: str, write: bool = False) -> pa.Table:
        """Run SQL against the catalog; read-only (ReadOnlyQueryError on writes) unless ``write``."""
        return run_write(self.root, query) if write else run_read_only(self.root, query, self._session)

    def training_frame(self, feature_set: str, label: str = "response", clinical: list[str] | None = None,
                       labs: list[str] | None = None, max_age_days: int | None = None) -> TrainingFrame:
        """One row per patient: features, clinical columns and point-in-time labs (docs/architecture.md)."""
        reg = self.registry()
        v = reg.resolve(feature_set)
        clinical, labs = list(clinical or []), list(dict.fromkeys(labs or []))
        clin_cols = [f["name"] for f in reg.table_entry("clinical")["schema"]]
        lab_names = None
        if labs and "labs" in reg.tables():
            lab_names = distinct_names(self.root / reg.table_entry("labs")["path"])
        check_request(clin_cols, lab_names, label=label, clinical=clinical, labs=labs)
        if max_age_days is not None and int(max_age_days) < 0:
            raise StoreError(f"training frame: max_age_days={max_age_days} must be >= 0")
        view = f"{v.name}__{v.version_id}"
        args = dict(label=label, clinical=clinical, labs=labs, max_age_days=max_age_days,
                    has_pfs={"pfs_days", "pfs_event"} <= set(clin_cols))
        query = frame_sql(view, **args)  # the whole frame in one query: recorded, reruns in `dltr sql`
        table = self._frame_table(v, frame_sql(view, embedding=False, **args))
        lineage = {"feature_set": v.name, "feature_set_version": v.version_id, "version": v.version_id,
                   "feature_set_status": v.status, "feature_set_lineage": v.lineage, "label": label,
                   "clinical": clinical, "labs": labs, "max_age_days": max_age_days, "sql": query,
                   "registry_revision": reg.revision, "n_rows": table.num_rows, "row_hash": table_hash(table),
                   "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        return TrainingFrame(table, lineage)

    def _frame_table(self, v: FeatureSetVersion, query: str) -> pa.Table:
        """Run the frame query without the embedding while a thread reads the version's Parquet
        embeddings, then attach them (typed as DuckDB exports ``FLOAT[D]``, placed after ``pfs_event``)
        aligned to the frame's rows (features/_frame_embed.py)."""
        view = ident(f"{v.name}__{v.version_id}")
        what = f"training frame of {v.ref}"
        files = sorted((self.root / v.path).glob("*/*.parquet"))  # the files behind the version's view

        def run(con):
            field = con.sql(f"SELECT embedding FROM {view} LIMIT 0").to_arrow_table().schema.field(0)
            return con.sql(query).to_arrow_table().combine_chunks(), field

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dltr-frame") as pool:
            parts = pool.submit(read_embeddings, files, v.dim, what)
            table, field = on_catalog(self.root, run, self._session, sql=[view])
            if is_packed(v.lineage):  # SQL sees the packed bytes; the frame holds the floats, as for any version
                field = pa.field("embedding", pa.list_(pa.float32(), v.dim))
            emb = align_embeddings(parts.result(), table.column("patient_id"), field, what)
        return table.add_column(BASE_COLUMNS.index("embedding"), field, emb)

    def nearest(self, feature_set: str, patient_id: str, k: int = 10) -> pa.Table:
        """The ``k`` rows most cosine-similar to ``patient_id`` (itself excluded), best first."""
        v = self.registry().resolve(feature_set)
        if is_packed(v.lineage):
            raise StoreError(f"{v.ref}: its embeddings are stored packed (BLOBs in SQL: encoder inputs such as "
                             "roi_tensors, not features); nearest compares a feature set's embeddings")
        view = ident(f"{v.name}__{v.version_id}")
        params = {"pid": patient_id, "k": int(k)}

        def run(con):
            out = con.sql(
                f"SELECT patient_id, center, array_cosine_similarity(embedding, "
                f"(SELECT embedding FROM {view} WHERE patient_id = $pid)) AS similarity FROM {view} "
                "WHERE patient_id <> $pid ORDER BY similarity DESC NULLS LAST, patient_id LIMIT $k",
                params=params).to_arrow_table()
            if out.num_rows == 0 or out.column("similarity")[0].as_py() is None:
                n = con.sql(f"SELECT count(*) FROM {view} WHERE patient_id = $pid",
                            params={"pid": patient_id}).fetchall()[0][0]
                if n == 0:
                    raise StoreError(f"{v.ref}: no row for patient {patient_id!r}")
            return out

        return on_catalog(self.root, run, self._session, sql=[view])

    def embedding_means(self, feature_set: str, by: str | None = "center") -> pa.Table:
        """Per-dimension mean of the embedding for each ``center`` (``by=None``: over all rows).

        Columns ``center`` (null when ``by=None``), ``n`` (rows), ``mean`` (``fixed_size_list<float64>[D]``,
        accumulated in float64). Reads each center partition's Parquet files straight into NumPy.
        """
        return embedding_means(self.root, self.registry().resolve(feature_set), by)

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """Rows added / removed / changed from version ``a`` to ``b`` and per-dimension mean drift."""
        va, vb = self.resolve(a), self.resolve(b)
        ta = self.read(va.ref, columns=["patient_id", "embedding"]).combine_chunks()
        tb = self.read(vb.ref, columns=["patient_id", "embedding"]).combine_chunks()
        ia, ib = ta.column("patient_id").to_pylist(), tb.column("patient_id").to_pylist()
        sa, sb = set(ia), set(ib)
        out: dict[str, Any] = {"a": va.ref, "b": vb.ref, "rows_a": len(ia), "rows_b": len(ib),
                               "added": sorted(sb - sa), "removed": sorted(sa - sb)}
        if va.dim != vb.dim:
            out.update(drift=None, changed=None, note=f"dimensions differ ({va.dim} vs {vb.dim})")
            return out
        ea, eb = embedding_matrix(ta), embedding_matrix(tb)
        drift = eb.mean(axis=0, dtype=np.float64) - ea.mean(axis=0, dtype=np.float64)
        common = sorted(sa & sb)
        pa_idx = {p: i for i, p in enumerate(ia)}
        pb_idx = {p: i for i, p in enumerate(ib)}
        xa = ea[[pa_idx[p] for p in common]]
        xb = eb[[pb_idx[p] for p in common]]
        out.update(common=len(common), changed=int((xa != xb).any(axis=1).sum()) if common else 0,
                   drift=drift.tolist(), drift_max_abs=float(np.abs(drift).max()),
                   drift_l2=float(np.linalg.norm(drift)))
        return out
