//! The server's log writer: log lines leave the request path through a shared buffer, and a
//! dedicated thread writes them to stderr in batches.
//!
//! Why: the access log writes one line per request. Written straight to stderr that is one
//! `write(2)` per request on a tokio worker, under the stderr lock, and under systemd a wake-up
//! of journald on the same two cores: the profile put it at about a quarter of the forward-auth
//! path (docs/PERFORMANCE.md). A channel with a thread woken per line costs as much again (a
//! futex wake per line), so here a request only appends its line to a buffer (no syscall, no
//! allocation); the first line into an empty buffer wakes the writer, which waits
//! [`GATHER`] for more and writes them all at once.
//!
//! The rules: a request never blocks on the log (a full buffer drops the line and counts it,
//! and the writer reports the count in the log as soon as it catches up); lines are held at
//! most [`GATHER`] plus one write; [`flush`] writes everything queued before it returns (at
//! exit, and before the process exits on a damaged database); the order of lines is kept.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

/// Bytes the buffer holds before new lines are dropped (about 10,000 access-log lines).
pub const CAPACITY: usize = 1024 * 1024;
/// How long the writer gathers lines after the first one before it writes them.
pub const GATHER: Duration = Duration::from_millis(20);
/// A buffer this full wakes the writer before its gathering time is up.
const HIGH_WATER: usize = 64 * 1024;

struct Sink {
    /// Lines waiting for the writer.
    pending: Mutex<Vec<u8>>,
    /// Held while a batch is taken and written, so batches leave in order.
    out: Mutex<Box<dyn Write + Send>>,
    capacity: usize,
    dropped: AtomicU64,
    /// Drops already reported in the log (under `out`).
    reported: AtomicU64,
    writer: OnceLock<Thread>,
}

static SINK: OnceLock<&'static Sink> = OnceLock::new();

/// The `Write` end handed to the logger: it collects one record and queues it on `flush`
/// (env_logger writes each formatted record whole, then flushes, under its own lock).
pub struct Writer {
    sink: &'static Sink,
    line: Vec<u8>,
}

/// Starts the writer thread on stderr (once; later calls return another handle to the same
/// buffer). `None` if the thread cannot be started: the caller then logs to stderr directly.
pub fn start() -> Option<Writer> {
    let sink = match SINK.get() {
        Some(s) => *s,
        None => {
            let s = spawn(Box::new(std::io::stderr()), CAPACITY)?;
            *SINK.get_or_init(|| s)
        }
    };
    Some(Writer {
        sink,
        line: Vec::new(),
    })
}

/// A writer thread over `out` with a buffer of `capacity` bytes. The sink lives as long as
/// the process (one per server).
fn spawn(out: Box<dyn Write + Send>, capacity: usize) -> Option<&'static Sink> {
    let sink: &'static Sink = Box::leak(Box::new(Sink {
        pending: Mutex::new(Vec::with_capacity(HIGH_WATER)),
        out: Mutex::new(out),
        capacity,
        dropped: AtomicU64::new(0),
        reported: AtomicU64::new(0),
        writer: OnceLock::new(),
    }));
    let handle = std::thread::Builder::new()
        .name("edgeauth-log".into())
        .spawn(move || {
            loop {
                // Woken by the first line into an empty buffer (or by a flush, harmlessly).
                std::thread::park();
                // Gather more; a filling buffer cuts this short.
                std::thread::park_timeout(GATHER);
                sink.write_pending();
            }
        })
        .ok()?;
    let _ = sink.writer.set(handle.thread().clone());
    Some(sink)
}

/// Lines dropped because the buffer was full, since start.
pub fn dropped() -> u64 {
    SINK.get().map_or(0, |s| s.dropped.load(Ordering::Relaxed))
}

/// Writes every line queued so far, from the calling thread. Does nothing if the writer was
/// never started.
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.write_pending();
    }
}

impl Sink {
    /// Takes what is pending and writes it, with a note of lines dropped since the last one.
    fn write_pending(&self) {
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::replace(&mut *pending, Vec::with_capacity(HIGH_WATER))
        };
        let dropped = self.dropped.load(Ordering::Relaxed);
        let reported = self.reported.swap(dropped, Ordering::Relaxed);
        if dropped > reported {
            batch.extend_from_slice(
                format!(
                    "edgeauth: {} log lines dropped: the log writer fell behind\n",
                    dropped - reported
                )
                .as_bytes(),
            );
        }
        if !batch.is_empty() {
            // Nowhere to report a failed stderr write; the lines are gone either way.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
        }
    }

    fn push(&self, line: &[u8]) {
        let wake = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.len() + line.len() > self.capacity {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let was_empty = pending.is_empty();
            pending.extend_from_slice(line);
            was_empty || (pending.len() >= HIGH_WATER && pending.len() - line.len() < HIGH_WATER)
        };
        if wake && let Some(t) = self.writer.get() {
            t.unpark();
        }
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.line.is_empty() {
            self.sink.push(&self.line);
            self.line.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    /// An output the test reads back; `gate` held closed stalls the writer.
    #[derive(Clone, Default)]
    struct Shared {
        out: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
    }
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _open = self.gate.lock().unwrap();
            self.out.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    fn text(s: &Shared) -> String {
        String::from_utf8(s.out.lock().unwrap().clone()).unwrap()
    }
    fn writer(sink: &'static Sink) -> Writer {
        Writer {
            sink,
            line: Vec::new(),
        }
    }

    #[test]
    fn records_arrive_whole_in_order_and_a_flush_writes_them() {
        let shared = Shared::default();
        let sink = spawn(Box::new(shared.clone()), CAPACITY).unwrap();
        let mut w = writer(sink);
        for i in 0..1000 {
            // A record may come in pieces; it is queued whole on flush.
            write!(w, "line ").unwrap();
            writeln!(w, "{i}").unwrap();
            w.flush().unwrap();
        }
        sink.write_pending();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text(&shared), expected);
    }

    #[test]
    fn a_line_is_written_soon_without_waiting_for_more() {
        let shared = Shared::default();
        let mut w = writer(spawn(Box::new(shared.clone()), CAPACITY).unwrap());
        // Twice: the writer goes back to sleep after a batch and wakes for the next.
        for round in 0..2 {
            let t0 = Instant::now();
            writeln!(w, "alone {round}").unwrap();
            w.flush().unwrap();
            while !text(&shared).contains(&format!("alone {round}")) {
                assert!(t0.elapsed() < Duration::from_secs(5), "the line was held");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(text(&shared), "alone 0\nalone 1\n");
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_instead_of_blocking_and_says_so() {
        let shared = Shared::default();
        let gate = shared.gate.lock().unwrap();
        // Room for 4 lines of 7 bytes.
        let sink = spawn(Box::new(shared.clone()), 28).unwrap();
        let mut w = writer(sink);
        let t0 = Instant::now();
        for i in 0..10 {
            writeln!(w, "line {i}").unwrap();
            w.flush().unwrap();
        }
        // Wait until the writer has taken its batch and hangs in the write.
        while sink.pending.lock().unwrap().len() == 28 {
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in 10..100 {
            writeln!(w, "line {i}").unwrap();
            w.flush().unwrap();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "a request waited on the log"
        );
        let dropped = sink.dropped.load(Ordering::Relaxed);
        // 4 in the stalled batch, at most 4 more pending (each "line NN\n" is 8 bytes: 3 fit).
        assert!(dropped >= 100 - 4 - 4, "dropped {dropped}");
        drop(gate);
        sink.write_pending();
        let out = text(&shared);
        assert!(out.starts_with("line 0\nline 1\nline 2\nline 3\n"), "{out}");
        // Every drop is reported (in one note per batch that followed drops).
        let notes: Vec<u64> = out
            .lines()
            .filter_map(|l| l.strip_prefix("edgeauth: "))
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(notes.iter().sum::<u64>(), dropped, "{out}");
        let lines = out.lines().filter(|l| l.starts_with("line ")).count() as u64;
        assert_eq!(lines, 100 - dropped, "{out}");
    }
}
