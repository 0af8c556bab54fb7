"""Curation inspector: browse the rows each stage dropped, with their images, and the near-duplicate clusters
(notebook 01). Works on the pipeline's records and its input (a CSV or shards), read again for the images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from ..curation.data_card import duplicate_clusters
from ..curation.inputs import read_images
from ._grid import image_grid, render_into


def dropped_by_reason(records: Sequence[Any]) -> dict[str, list[Any]]:
    """Dropped records grouped by reason, largest group first (kept rows, reason None, are left out)."""
    groups: dict[str, list[Any]] = {}
    for r in records:
        if r.reason is not None:
            groups.setdefault(r.reason, []).append(r)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


def _title(record: Any, width: int = 30) -> str:
    text = record.caption or ""
    extra = record.detail or (f"dup of row {record.duplicate_of}" if record.duplicate_of is not None else "")
    return f"row {record.row}\n{text[:width]}\n{str(extra)[:width]}"


class CurationInspector:
    def __init__(self, records: Sequence[Any], source: str | Path, per_page: int = 8) -> None:
        self.records, self.source, self.per_page = list(records), source, per_page
        self.by_row = {r.row: r for r in self.records}
        self.groups = dropped_by_reason(self.records)
        self.clusters = duplicate_clusters(self.records, top=len(self.records), per_cluster=7)

    def pages(self, reason: str) -> int:
        return max(1, -(-len(self.groups.get(reason, [])) // self.per_page))

    def page_rows(self, reason: str, page: int = 0) -> list[int]:
        if reason not in self.groups:
            raise KeyError(f"nothing was dropped as {reason!r}; reasons: {', '.join(self.groups) or 'none'}")
        rows = [r.row for r in self.groups[reason]]
        return rows[page * self.per_page : (page + 1) * self.per_page]

    def dropped(self, reason: str, page: int = 0) -> Figure:
        """One page of the rows dropped as ``reason``: image (blank if unreadable), caption, detail."""
        rows = self.page_rows(reason, page)
        images = read_images(self.source, rows)
        return image_grid([images.get(row) for row in rows], [_title(self.by_row[row]) for row in rows])

    def cluster(self, index: int) -> Figure:
        """Cluster ``index`` (largest first): the kept representative, then the rows dropped as its duplicates."""
        if not 0 <= index < len(self.clusters):
            raise IndexError(f"cluster {index}: there are {len(self.clusters)} duplicate clusters")
        rows = self.clusters[index]
        images = read_images(self.source, rows)
        titles = [("KEPT " if j == 0 else "dup ") + _title(self.by_row[row]) for j, row in enumerate(rows)]
        return image_grid([images.get(row) for row in rows], titles)

    def widget(self) -> Any:
        import ipywidgets as widgets

        reason = widgets.Dropdown(options=[(f"{k} ({len(v)})", k) for k, v in self.groups.items()],
                                  description="reason")
        page = widgets.IntSlider(0, min=0, max=max(self.pages(reason.value) - 1, 0) if self.groups else 0,
                                 description="page")
        cluster = widgets.IntSlider(0, min=0, max=max(len(self.clusters) - 1, 0), description="cluster")
        out_drop, out_dup = widgets.Output(), widgets.Output()

        def on_reason(_: Any = None) -> None:
            page.max = max(self.pages(reason.value) - 1, 0) if reason.value else 0
            render_into(out_drop, lambda: self.dropped(reason.value, page.value), (KeyError, IndexError))

        def on_cluster(_: Any = None) -> None:
            render_into(out_dup, lambda: self.cluster(cluster.value), (KeyError, IndexError))

        reason.observe(on_reason, names="value")
        page.observe(on_reason, names="value")
        cluster.observe(on_cluster, names="value")
        self._refresh = lambda: (on_reason(), on_cluster())
        return widgets.VBox([widgets.HTML(f"<b>dropped rows</b> ({sum(map(len, self.groups.values()))})"),
                             widgets.HBox([reason, page]), out_drop,
                             widgets.HTML(f"<b>near-duplicate clusters</b> ({len(self.clusters)})"), cluster,
                             out_dup])

    def show(self) -> Any:
        box = self.widget()
        self._refresh()
        return box
