"""The continuous change log: point-in-time recovery (issue 15).

``slices`` (the slice format and the open slice), ``clock`` (the primary's clock), ``spool``
(sealed slices waiting for the repository), ``archiver``/``archive``/``service`` (writing the
log inside the runner), ``timeline`` (timelines, restorable intervals, the restore plan),
``state`` (a table at a time: base + changes), ``restore_at`` (restore --at, --delta).
Objects are stored through ``drtool.repo.log_objects``; the format is docs/FORMAT.md §10.
"""
