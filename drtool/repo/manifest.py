"""Snapshot manifests: what a snapshot holds, as plain data with a stable JSON form.

A manifest is sealed (encrypted) by the repository; this module only defines its content and
its JSON (de)serialisation. docs/FORMAT.md specifies the fields.

A table's documents are one or more *layers*. Layer 0 (the base) is a list of segments that
tile the whole key space in order: segment ``i`` holds the documents with
``segments[i-1].upto < key <= segments[i].upto`` (the first segment starts at the open low
end, the last has ``upto = None``: the open high end). A later layer (delta over the layers
before it) holds upsert segments (documents that changed or appeared, in key order, tiling
only the ranges they cover) and deletion objects (keys removed). Reading the table = merging
layers, the latest layer winning per key.

Digests (docs/FORMAT.md §6.2): a segment's ``digest`` is ``r.uuid`` of the JSON array of its
documents' ``r.uuid(text)`` values in key order; it equals the server's
``segment_digests`` of the range ``(previous upto, upto]`` at snapshot time. The ranges of the
final state are ``TableEntry.ranges``; the table ``digest`` is the fold
``acc = uuid5(NS, acc + digest)`` over the range digests in order, so a live table can be
compared range by range.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drtool.reql.digest import fold_digests
from drtool.model import KeyText, TableMeta, TableName

FORMAT_VERSION = 2


@dataclass(frozen=True)
class SegmentRef:
    """A data object holding documents of one key range, and its index object.

    The index object (sealed with the metadata key, readable by a writer) holds the JSON
    array of the documents' ``r.uuid(text)`` on its first line, then one key text per line,
    in the segment's order:
    what an incremental snapshot compares with the live table, and where a restore of layered
    snapshots takes the keys from. In a layer's ``deletions`` the ref points at an index
    object with an empty first line and ``<key text>`` lines, and has no index of its own."""

    id: str  # object id (HMAC of plaintext, hex)
    upto: KeyText | None  # inclusive upper bound of the range; None = open end
    count: int  # documents in the segment
    digest: str  # segment digest (r.uuid of the JSON array of its documents' r.uuid)
    plain_size: int  # bytes of NDJSON plaintext
    stored_size: int  # bytes of the stored (compressed, encrypted) object
    index: str | None = None  # index object id
    index_size: int = 0  # its stored size

    def to_json(self) -> list:
        return [self.id, self.upto, self.count, self.digest, self.plain_size, self.stored_size,
                self.index, self.index_size]

    @classmethod
    def from_json(cls, data: list) -> "SegmentRef":
        return cls(*data)

    @property
    def total_stored(self) -> int:
        return self.stored_size + self.index_size


@dataclass(frozen=True)
class Range:
    """Digest of the final state of one key range ``(previous upto, upto]``."""

    upto: KeyText | None
    count: int
    digest: str

    def to_json(self) -> list:
        return [self.upto, self.count, self.digest]

    @classmethod
    def from_json(cls, data: list) -> "Range":
        return cls(*data)


@dataclass(frozen=True)
class Layer:
    segments: tuple[SegmentRef, ...] = ()
    deletions: tuple[SegmentRef, ...] = ()  # objects of NDJSON key texts; digest is over keys

    def to_json(self) -> dict:
        return {
            "segments": [s.to_json() for s in self.segments],
            "deletions": [s.to_json() for s in self.deletions],
        }

    @classmethod
    def from_json(cls, data: dict) -> "Layer":
        return cls(
            tuple(SegmentRef.from_json(s) for s in data["segments"]),
            tuple(SegmentRef.from_json(s) for s in data.get("deletions", [])),
        )

    def objects(self) -> tuple[SegmentRef, ...]:
        return self.segments + self.deletions

    @property
    def stored_size(self) -> int:
        return sum(s.total_stored for s in self.objects())


@dataclass(frozen=True)
class TableEntry:
    meta: TableMeta
    doc_count: int
    digest: str
    ranges: tuple[Range, ...]
    layers: tuple[Layer, ...]
    started: str  # ISO 8601 UTC, when the table's feed was ready
    finished: str  # when the table was sealed
    rescans: int = 0  # times the table was re-read (feed overflow) or ranges re-read

    @property
    def name(self) -> TableName:
        return self.meta.name

    @classmethod
    def full_copy(cls, meta: TableMeta, segments: list[SegmentRef], *, started: str,
                  finished: str, rescans: int = 0) -> "TableEntry":
        """The entry of a table stored in full as one base layer of ``segments``: its ranges
        are the segments' ranges, its digest their fold."""
        return cls(
            meta=meta, doc_count=sum(s.count for s in segments),
            digest=fold_digests(s.digest for s in segments),
            ranges=tuple(Range(s.upto, s.count, s.digest) for s in segments),
            layers=(Layer(segments=tuple(segments)),), started=started, finished=finished,
            rescans=rescans,
        )

    def objects(self) -> list[SegmentRef]:
        """Every data segment of every layer (deletion refs excluded: they are index objects)."""
        return [s for layer in self.layers for s in layer.segments]

    def index_objects(self) -> list[tuple[str, int]]:
        """Every index object (id, stored size): segment indexes and deletion lists."""
        out = [(s.index, s.index_size) for layer in self.layers for s in layer.segments if s.index]
        out += [(d.id, d.stored_size) for layer in self.layers for d in layer.deletions]
        return out

    def to_json(self) -> dict:
        return {
            "meta": self.meta.to_json(),
            "doc_count": self.doc_count,
            "digest": self.digest,
            "ranges": [r.to_json() for r in self.ranges],
            "layers": [layer.to_json() for layer in self.layers],
            "started": self.started,
            "finished": self.finished,
            "rescans": self.rescans,
        }

    @classmethod
    def from_json(cls, data: dict) -> "TableEntry":
        return cls(
            meta=TableMeta.from_json(data["meta"]),
            doc_count=data["doc_count"],
            digest=data["digest"],
            ranges=tuple(Range.from_json(r) for r in data["ranges"]),
            layers=tuple(Layer.from_json(layer) for layer in data["layers"]),
            started=data["started"],
            finished=data["finished"],
            rescans=data.get("rescans", 0),
        )


@dataclass(frozen=True)
class Manifest:
    id: str  # snapshot id, sortable by time: 20261124T043200Z-1a2b3c4d
    time: str  # ISO 8601 UTC, when the snapshot finished
    policy: str  # policy name
    source: str  # "primary" / "standby" and the host it was read from
    tables: tuple[TableEntry, ...]
    parent: str | None = None  # snapshot this one builds on (incremental), if any
    bytes_new: int = 0  # stored bytes this snapshot uploaded
    extra: dict = field(default_factory=dict)  # forward-compatible annotations

    @property
    def doc_count(self) -> int:
        return sum(t.doc_count for t in self.tables)

    @property
    def bytes_referenced(self) -> int:
        return sum(layer.stored_size for t in self.tables for layer in t.layers)

    def table(self, name: TableName) -> TableEntry | None:
        return next((t for t in self.tables if t.name == name), None)

    def to_json(self) -> dict:
        return {
            "version": FORMAT_VERSION,
            "id": self.id,
            "time": self.time,
            "policy": self.policy,
            "source": self.source,
            "parent": self.parent,
            "bytes_new": self.bytes_new,
            "tables": [t.to_json() for t in self.tables],
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Manifest":
        return cls(
            id=data["id"],
            time=data["time"],
            policy=data["policy"],
            source=data["source"],
            tables=tuple(TableEntry.from_json(t) for t in data["tables"]),
            parent=data.get("parent"),
            bytes_new=data.get("bytes_new", 0),
            extra=data.get("extra", {}),
        )
