//! Timing whole commands: wall time, peak RSS (from wait4), and stdout lines
//! with the instant each arrived; and an HTTP prober that runs beside them.

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where in the wall clock's second a compared run starts: round `i` of
/// `runs` gets the `i`-th of `runs` equal slices of the second, and a point
/// in that slice drawn for this run alone from `salt` (say, the tool and the
/// cell) and the run's nonce.
///
/// Why: on the machine BENCHMARKS.md was measured on, the engine finishes a
/// build that makes new layers only at a whole second of the wall clock
/// (`crate::bed::build_phases` measures it), so a build's time depends on
/// where in the second it starts. Each tool starts its build at its own
/// offset into the run, and runs that follow each other at a steady pace
/// keep their phase: one tool's builds could wait longer than another's run
/// after run. Slices alone would not do: a grid shifted by a tool's offset
/// still biases its median by up to a slice. With the point drawn in each
/// slice, every tool's builds start at phases spread evenly over the second
/// whatever its offset, and the slices keep the spread even in few runs.
pub fn run_phase(i: usize, runs: usize, salt: &str) -> f64 {
    let runs = runs.max(1);
    let u = unit(&format!("{}/{salt}/{i}", crate::bed::run_nonce()));
    ((i % runs) as f64 + u) / runs as f64
}

/// A number in [0, 1) drawn from `key` (FNV-1a, then splitmix64's finaliser):
/// the same key, the same number; no dependency for it.
fn unit(key: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Where the wall clock is within its second now, in [0, 1).
pub fn second_fraction() -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    now.subsec_nanos() as f64 / 1e9
}

/// Sleeps until the wall clock's fraction of a second is `phase`.
pub fn wait_for_phase(phase: f64) {
    let wait = (phase - second_fraction()).rem_euclid(1.0);
    std::thread::sleep(Duration::from_secs_f64(wait));
}

/// One timed run of one or more commands, one after another.
pub struct Sample {
    pub wall: Duration,
    /// Peak resident set of the last command, in KiB: the largest of it and the
    /// children it waited for (ssh masters that went to the background are not among them).
    pub max_rss_kib: u64,
    /// Lines the last command printed on stdout, with when each arrived.
    pub lines: Vec<(Instant, String)>,
}

impl Sample {
    /// The JSON events (for `deploy --output json`), with their arrival.
    pub fn events(&self) -> Vec<(Instant, serde_json::Value)> {
        self.lines
            .iter()
            .filter_map(|(t, l)| serde_json::from_str(l).ok().map(|v| (*t, v)))
            .collect()
    }

    /// When the event matching `pred` arrived.
    pub fn event_at(&self, pred: impl Fn(&serde_json::Value) -> bool) -> Option<Instant> {
        self.events().into_iter().find(|(_, e)| pred(e)).map(|(t, _)| t)
    }
}

/// Runs `commands` in turn and times them together. stderr (and stdout of all
/// but the last) goes to `log`. Panics with the log's tail if one fails.
pub fn timed(mut commands: Vec<Command>, log: &Path) -> Sample {
    let started = Instant::now();
    let last = commands.len() - 1;
    let mut max_rss_kib = 0;
    let mut lines = Vec::new();
    for (i, cmd) in commands.iter_mut().enumerate() {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        let _ = writeln!(&file, "$ {cmd:?}");
        cmd.stdin(Stdio::null()).stderr(file.try_clone().unwrap());
        // Only the last command's stdout is read: nothing a tool leaves
        // running (an ssh master) may hold a pipe the bench waits on.
        if i == last {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(file);
        }
        // Reaped by wait4 below (for its rusage), not by Child::wait.
        #[allow(clippy::zombie_processes)]
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let reader = child.stdout.take().map(|out| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for line in std::io::BufReader::new(out).lines() {
                    match line {
                        Ok(l) => got.push((Instant::now(), l)),
                        Err(_) => break,
                    }
                }
                got
            })
        });
        let (status, rss) = wait4(child.id());
        if let Some(r) = reader {
            lines = r.join().expect("reader");
        }
        max_rss_kib = rss;
        let mut file = std::fs::OpenOptions::new().append(true).open(log).expect("open log");
        for (t, l) in &lines {
            let _ = writeln!(file, "{:>7} ms | {l}", t.duration_since(started).as_millis());
        }
        let _ = writeln!(file, "= {} ms, exit status {status}", started.elapsed().as_millis());
        if status != 0 {
            let mut text = String::new();
            let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            let out: Vec<&str> = lines.iter().rev().take(20).map(|(_, l)| l.as_str()).collect();
            panic!(
                "{cmd:?} failed (wait status {status}); stdout tail:\n{}\nlog tail:\n{}",
                out.into_iter().rev().collect::<Vec<_>>().join("\n"),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    Sample {
        wall: started.elapsed(),
        max_rss_kib,
        lines,
    }
}

/// Waits for `pid` and returns its wait status and peak RSS in KiB.
fn wait4(pid: u32) -> (i32, u64) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waiting on a child we spawned and have not waited for.
        let r = unsafe { libc::wait4(pid as libc::pid_t, &mut status, 0, &mut usage) };
        if r == pid as libc::pid_t {
            return (status, usage.ru_maxrss as u64);
        }
        let err = std::io::Error::last_os_error();
        assert_eq!(err.kind(), std::io::ErrorKind::Interrupted, "wait4: {err}");
    }
}

/// How long a benchmark probe waits for its answer: longer than the demo
/// proxy's retries (Caddy's `lb_try_duration`, 5 s, then a 502), shorter than
/// an HTTP client's usual timeout. A probe without a 200 in this time is a
/// request a user saw fail.
pub const PROBE_LIMIT: Duration = Duration::from_secs(10);

/// A 200 slower than this is counted apart, as late: answered, yet slow
/// enough for a user to notice.
pub const PROBE_LATE: Duration = Duration::from_secs(1);

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The arithmetic mean (NaN for none). Beside the median where runs start at
/// phases spread evenly over the second (see [`run_phase`]): the mean over
/// them is the expected time, where a median of few runs can land on either
/// side of the build's sawtooth.
pub fn mean(xs: &[f64]) -> f64 {
    match xs.len() {
        0 => f64::NAN,
        n => xs.iter().sum::<f64>() / n as f64,
    }
}
