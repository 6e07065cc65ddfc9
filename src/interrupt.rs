//! Ctrl-C and SIGTERM: noticed once, then every part of a run can ask whether to
//! stop and wait for it, so cleanup (restore, unlock, close) still happens.

use tokio::sync::watch;

/// Whether the user asked the run to stop.
#[derive(Debug, Clone)]
pub struct Interrupt {
    rx: watch::Receiver<bool>,
}

impl Interrupt {
    /// Listens for SIGINT and SIGTERM. Must be called inside the runtime.
    pub fn install() -> Interrupt {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            let _ = tx.send(true);
            // Keep the handlers installed so a second signal does not kill us mid-cleanup.
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
        });
        Interrupt { rx }
    }

    /// One that never fires (tests, commands that need no cleanup).
    pub fn never() -> Interrupt {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        Interrupt { rx }
    }

    /// Whether a stop was asked for.
    pub fn is_set(&self) -> bool {
        *self.rx.borrow()
    }

    /// Resolves when a stop is asked for.
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|v| *v).await;
        if !*rx.borrow() {
            // The sender is gone without a signal: never resolve.
            std::future::pending::<()>().await;
        }
    }
}
