//! Alarm activations from PostgreSQL for the alarm-load report: the same rows in the same order as the
//! SQLite loader (`store::alarms`), built into [`Alarms`] by the same [`AlarmsBuilder`].

use super::read::Reader;
use super::PgError;
use crate::join::Alarms;
use crate::store::alarms::AlarmsBuilder;
use futures_util::{pin_mut, TryStreamExt};

impl Reader {
    /// Alarm activations raised before `to_ms` with their attributes, keys interned, sorted by raise time
    /// (as `store::alarms::alarm_records`). Rows are streamed, not held all at once.
    ///
    /// # Errors
    /// Statement failures.
    pub fn alarms(&self, to_ms: i64) -> Result<Alarms, PgError> {
        self.rt
            .block_on(async {
                let rows = self
                    .client
                    .query_raw(
                        "SELECT site, asset, ts_ms, body FROM events WHERE kind = 'alarm' AND ts_ms < $1
                         ORDER BY site, gateway, epoch, seq",
                        [&to_ms],
                    )
                    .await?;
                pin_mut!(rows);
                let mut b = AlarmsBuilder::default();
                while let Some(r) = rows.try_next().await? {
                    b.push(r.get(0), r.get(1), r.get(2), r.get(3));
                }
                Ok(b.finish())
            })
            .map_err(|e: tokio_postgres::Error| self.target.sql_error(&e))
    }
}
