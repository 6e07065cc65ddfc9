//! Ctrl-C and SIGTERM: noticed once, then every part of a run can ask whether to
//! stop and wait for it, so cleanup (restore, unlock, close) still happens.
//! Later signals are counted, so work started after the first one (a hook run
//! on the way out) can still be stopped by the next.

use tokio::sync::watch;

/// Whether the user asked the run to stop.
#[derive(Debug, Clone)]
pub struct Interrupt {
    /// How many times a stop was asked for.
    rx: watch::Receiver<u32>,
}

impl Interrupt {
    /// Listens for SIGINT and SIGTERM. Must be called inside the runtime.
    pub fn install() -> Interrupt {
        let (tx, rx) = watch::channel(0u32);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            // The handlers stay installed so a second signal does not kill us mid-cleanup.
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                tx.send_modify(|n| *n = n.saturating_add(1));
            }
        });
        Interrupt { rx }
    }

    /// One that never fires (tests, commands that need no cleanup).
    pub fn never() -> Interrupt {
        let (tx, rx) = watch::channel(0u32);
        std::mem::forget(tx);
        Interrupt { rx }
    }

    /// Whether a stop was asked for.
    pub fn is_set(&self) -> bool {
        self.count() > 0
    }

    /// How many times a stop was asked for so far.
    pub fn count(&self) -> u32 {
        *self.rx.borrow()
    }

    /// Resolves when a stop is asked for.
    pub async fn wait(&self) {
        self.wait_beyond(0).await
    }

    /// Resolves when a stop is asked for after the `seen`th: `wait_beyond(count())`
    /// waits for a signal that comes after now.
    pub async fn wait_beyond(&self, seen: u32) {
        let mut rx = self.rx.clone();
        if rx.wait_for(|n| *n > seen).await.is_err() {
            // The sender is gone without a signal: never resolve.
            std::future::pending::<()>().await;
        }
    }
}
