//! The store's schema, as an ordered list of migrations (rusqlite_migration, tracked in `user_version`).
//! Append new migrations; never edit one that has shipped.

use rusqlite_migration::{Migrations, M};

/// All migrations in order.
pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("sql/001_events.sql")),
        M::up(include_str!("sql/002_people.sql")),
        M::up(include_str!("sql/003_gateway_identity.sql")),
        M::up(include_str!("sql/004_escalations.sql")),
        M::up(include_str!("sql/005_alarm_attributes.sql")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn alarm_attributes_are_readable_as_columns_and_null_for_old_alarms() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("c.db")).unwrap();
        migrations().to_latest(&mut conn).unwrap();
        conn.execute_batch(
            r#"INSERT INTO events (site, gateway, epoch, seq, asset, ts_ms, kind, body, received_ms) VALUES
               ('a', 'gw-1', 7, 1, 'press-1', 10, 'alarm',
                '{"alarm":{"id":"A1","active":true,"severity":850,"text":"t","priority":"high","acked":false,"shelved":true,"suppressed":false}}', 11),
               ('a', 'gw-1', 7, 2, 'press-1', 12, 'alarm', '{"alarm":{"id":"M1","active":true,"severity":500,"text":"m"}}', 13),
               ('a', 'gw-1', 7, 3, 'press-1', 14, 'state', '{"state":{"state":"down"}}', 15);"#,
        )
        .unwrap();
        type Row = (String, i64, Option<String>, Option<bool>, Option<bool>);
        let rows: Vec<Row> = conn
            .prepare("SELECT alarm_id, severity, priority, acked, shelved FROM alarm_events ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [("A1".into(), 850, Some("high".into()), Some(false), Some(true)), ("M1".into(), 500, None, None, None)]
        );
    }

    #[test]
    fn migration_3_keys_events_gateways_and_offline_marks_by_site_and_keeps_existing_rows() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("c.db")).unwrap();
        migrations().to_version(&mut conn, 2).unwrap();
        conn.execute_batch(
            "INSERT INTO events VALUES ('gw-1', 7, 1, 'a', 'press-1', 10, 'state', '{}', 11);
             INSERT INTO gateways VALUES ('gw-1', 'a', 1, 12, '{}');
             INSERT INTO gateway_offline VALUES ('gw-1', 'a', 13);",
        )
        .unwrap();
        migrations().to_latest(&mut conn).unwrap();
        let n = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
        assert_eq!(n("SELECT COUNT(*) FROM events WHERE site = 'a' AND gateway = 'gw-1' AND received_ms = 11"), 1);
        assert_eq!(n("SELECT COUNT(*) FROM gateways WHERE site = 'a' AND last_seen_ms = 12"), 1);
        assert_eq!(n("SELECT COUNT(*) FROM gateway_offline WHERE site = 'a' AND ts_ms = 13"), 1);
        // The same gateway id, epoch and seq in another site is another row everywhere.
        conn.execute_batch(
            "INSERT INTO events (site, gateway, epoch, seq, asset, ts_ms, kind, body, received_ms)
               VALUES ('b', 'gw-1', 7, 1, 'press-1', 10, 'state', '{}', 11);
             INSERT INTO gateways (site, gateway, online, last_seen_ms, status) VALUES ('b', 'gw-1', 1, 12, '{}');
             INSERT INTO gateway_offline (site, gateway, ts_ms) VALUES ('b', 'gw-1', 13);",
        )
        .unwrap();
        for table in ["events", "gateways", "gateway_offline"] {
            assert_eq!(n(&format!("SELECT COUNT(*) FROM {table}")), 2, "{table}");
        }
    }
}
