//! Failing fast while the database is unreachable.
//!
//! Without this, every call made during an outage waits the pool's whole acquire timeout
//! for a connection that cannot be made (an API request that touches the store twice waits
//! twice). Once a call finds the database unreachable, the breaker opens: for the next
//! [`PROBE_EVERY`] calls fail at once with [`StoreError::Unavailable`], then one call is let
//! through to probe. The first call that reaches the database closes it again.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::StoreError;

/// How often a call is let through to find out whether the database is back.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, Default)]
pub struct Breaker {
    /// Set while the database is unreachable: since when, and when the last probe started.
    down: Mutex<Option<(Instant, Instant)>>,
}

impl Breaker {
    /// Runs `call`, unless the database was found unreachable and it is not time to probe.
    pub async fn call<T, F>(&self, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        {
            // A poisoned lock only means a panic elsewhere while holding it; the state is a
            // plain value and still valid.
            let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((since, probed)) = down.as_mut() {
                let now = Instant::now();
                if now.duration_since(*probed) < PROBE_EVERY {
                    return Err(StoreError::Unavailable {
                        reason: format!(
                            "unreachable for {} s; it is tried again every {} ms",
                            now.duration_since(*since).as_secs(),
                            PROBE_EVERY.as_millis()
                        ),
                    });
                }
                *probed = now;
            }
        }
        let result = call.await;
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Err(e) if e.is_unavailable() => {
                let now = Instant::now();
                let since = down.map_or(now, |(since, _)| since);
                *down = Some((since, now));
            }
            _ => *down = None,
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> StoreError {
        StoreError::Database(sqlx::Error::PoolTimedOut)
    }

    #[tokio::test]
    async fn opens_on_an_unreachable_database_probes_and_closes_on_success() {
        let breaker = Breaker::default();
        assert!(breaker.call(async { Ok(()) }).await.is_ok());
        assert!(breaker
            .call(async { Err::<(), _>(unreachable()) })
            .await
            .is_err());

        // Open: the call is not even started.
        let refused = breaker
            .call(async {
                if true {
                    panic!("called while the breaker is open");
                }
                Ok::<(), StoreError>(())
            })
            .await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable { .. })),
            "{refused:?}"
        );

        // A probe goes through after PROBE_EVERY; a failed one keeps it open.
        tokio::time::sleep(PROBE_EVERY).await;
        assert!(breaker
            .call(async { Err::<(), _>(unreachable()) })
            .await
            .is_err());
        let refused = breaker.call(async { Ok(()) }).await;
        assert!(matches!(refused, Err(StoreError::Unavailable { .. })));

        // A successful probe closes it.
        tokio::time::sleep(PROBE_EVERY).await;
        assert!(breaker.call(async { Ok(()) }).await.is_ok());
        assert!(breaker.call(async { Ok(()) }).await.is_ok());
    }

    #[tokio::test]
    async fn other_errors_do_not_open_it() {
        let breaker = Breaker::default();
        let conflict = breaker
            .call(async { Err::<(), _>(StoreError::conflict("x")) })
            .await;
        assert!(matches!(conflict, Err(StoreError::Conflict { .. })));
        assert!(breaker.call(async { Ok(()) }).await.is_ok());
    }
}
