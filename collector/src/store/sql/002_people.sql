-- personnel, skills, roster, assets, initiatives, work orders, join snapshots (owned by people)
-- Every imported row is a versioned record: an import that changes or drops a key closes the old version
-- (superseded_by) and adds a new one; nothing is updated in place or deleted.
CREATE TABLE people_import (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind        TEXT NOT NULL,
    file        TEXT NOT NULL,
    imported_ms INTEGER NOT NULL,
    added       INTEGER NOT NULL,
    changed     INTEGER NOT NULL,
    removed     INTEGER NOT NULL
);

CREATE TABLE people_record (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    kind          TEXT NOT NULL,
    key           TEXT NOT NULL,
    body          TEXT NOT NULL,
    import_id     INTEGER NOT NULL REFERENCES people_import(id),
    superseded_by INTEGER REFERENCES people_import(id)
);
CREATE UNIQUE INDEX people_record_current ON people_record(kind, key) WHERE superseded_by IS NULL;

-- The join of one downtime event, as computed from the records of data revision `data_rev` (the latest
-- people_import id then). Rows are only ever inserted: a different result is a new revision.
CREATE TABLE join_snapshot (
    event_key   TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    data_rev    INTEGER NOT NULL,
    computed_ms INTEGER NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (event_key, revision)
);
CREATE TRIGGER join_snapshot_immutable BEFORE UPDATE ON join_snapshot
BEGIN SELECT RAISE(ABORT, 'join snapshots are immutable'); END;
CREATE TRIGGER join_snapshot_no_delete BEFORE DELETE ON join_snapshot
BEGIN SELECT RAISE(ABORT, 'join snapshots are immutable'); END;
