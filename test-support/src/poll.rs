//! Waiting for something to become true without sleeping a guessed time: a check is polled until
//! it holds or a deadline passes, and a timeout panics with the check's last error, so the
//! failure says what was still wrong.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// Between two checks of [`eventually`]: its checks usually cross a process boundary (a command,
/// an HTTP request), so they are not repeated faster than this.
const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Between two checks of [`eventually_async`]: its checks usually read in-process state.
const ASYNC_INTERVAL: Duration = Duration::from_millis(20);

/// The outcome of one check: done with a value, or not yet with a reason.
pub trait Check {
    type Value;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl Check for bool {
    type Value = ();
    fn into_result(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("the check was still false".into())
        }
    }
}

impl<T> Check for Option<T> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "the check still found nothing".into())
    }
}

impl<T, E: Display> Check for Result<T, E> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Calls `check` until it succeeds and returns its value; panics after `timeout` with `what` and
/// the last error. Blocks the thread between checks: for tests outside an async runtime.
pub fn eventually<C: Check>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> C,
) -> C::Value {
    let end = Instant::now() + timeout;
    loop {
        match check().into_result() {
            Ok(value) => return value,
            Err(e) if Instant::now() >= end => {
                panic!("timed out after {timeout:?} waiting for {what}: {e}")
            }
            Err(_) => std::thread::sleep(SYNC_INTERVAL),
        }
    }
}

/// [`eventually`] for async tests: the check is a future, and the wait between checks yields to
/// the runtime (the tasks being waited for may run on it).
pub async fn eventually_async<C, F, Fut>(what: &str, timeout: Duration, mut check: F) -> C::Value
where
    C: Check,
    F: FnMut() -> Fut,
    Fut: Future<Output = C>,
{
    let end = tokio::time::Instant::now() + timeout;
    loop {
        match check().await.into_result() {
            Ok(value) => return value,
            Err(e) if tokio::time::Instant::now() >= end => {
                panic!("timed out after {timeout:?} waiting for {what}: {e}")
            }
            Err(_) => tokio::time::sleep(ASYNC_INTERVAL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_the_check_holds() {
        let mut calls = 0;
        let got = eventually("the third call", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "waiting for never: still 7")]
    fn a_timeout_panics_with_the_last_error() {
        let mut n = 0;
        eventually("never", Duration::from_millis(250), || {
            n += 1;
            Err::<(), _>(if n < 2 {
                "first".to_string()
            } else {
                "still 7".into()
            })
        });
    }

    #[tokio::test]
    async fn the_async_form_waits_for_another_task() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            tx.send(true).unwrap();
        });
        eventually_async("the flag", Duration::from_secs(5), || {
            let rx = rx.clone();
            async move { *rx.borrow() }
        })
        .await;
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for the flag: the check was still false")]
    async fn the_async_form_times_out() {
        eventually_async("the flag", Duration::from_millis(100), || async { false }).await;
    }
}
