//! A prober: GETs a path through a port at a steady pace, one request at a
//! time, for as long as it runs, and keeps every answer with when it was
//! asked and, without one, what the connection did. The tests' prober
//! ([`Prober::start`]) asks every 20 ms and waits at most 2 s for the connect
//! and for each read: a proxy that holds a request while nothing can answer
//! it (Caddy retries for up to 5 s) fails it there. The benchmark chooses
//! both ([`Prober::every`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a probe waits for its answer.
pub const LIMIT: Duration = Duration::from_secs(2);

/// One request and what came back.
#[derive(Debug, Clone)]
pub struct Probe {
    /// When it was sent.
    pub at: Instant,
    /// The status, or None when nothing answered (refused, reset, timed out).
    pub status: Option<u16>,
    pub body: String,
    /// Why nothing answered: what the connection did.
    pub error: Option<&'static str>,
    /// How long the connect took, if it succeeded.
    pub connected_after: Option<Duration>,
    /// How long the answer took (or the request, to fail).
    pub took: Duration,
}

impl Probe {
    /// Answered 200.
    pub fn ok(&self) -> bool {
        self.status == Some(200)
    }
}

/// Runs until [`Prober::finish`].
pub struct Prober {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<Probe>>,
}

impl Prober {
    /// Starts asking `path` on 127.0.0.1:`port` every 20 ms; each request
    /// gets [`LIMIT`] to answer.
    pub fn start(port: u16, path: &'static str) -> Prober {
        Prober::every(port, path, Duration::from_millis(20), LIMIT)
    }

    /// Starts asking `path` on 127.0.0.1:`port` every `period` (or as soon
    /// as the last answer came, if later); each request gets `limit`.
    pub fn every(port: u16, path: &'static str, period: Duration, limit: Duration) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut probes = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let at = Instant::now();
                let probed = super::http_probe("127.0.0.1", port, path, limit);
                let (status, body, error) = match probed.answer {
                    Ok((s, b)) => (Some(s), b.trim().to_string(), None),
                    Err(e) => (None, String::new(), Some(e)),
                };
                probes.push(Probe {
                    at,
                    status,
                    body,
                    error,
                    connected_after: probed.connected_after,
                    took: at.elapsed(),
                });
                std::thread::sleep((at + period).saturating_duration_since(Instant::now()));
            }
            probes
        });
        Prober { stop, handle }
    }

    /// Stops and returns every probe, in order.
    pub fn finish(self) -> Vec<Probe> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("the prober thread")
    }
}

/// The failed probes, as "status body" lines for an assertion message.
pub fn failures(probes: &[Probe]) -> Vec<String> {
    probes
        .iter()
        .filter(|p| !p.ok())
        .map(|p| format!("{:?} {}{}", p.status, p.body, p.error.unwrap_or_default()))
        .collect()
}

/// The longest a probe waited.
pub fn slowest(probes: &[Probe]) -> Duration {
    probes.iter().map(|p| p.took).max().unwrap_or_default()
}
