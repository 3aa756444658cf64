//! Turns a panic inside redb into one line and exit code 3.
//!
//! redb trusts the pages it reads once a file is open: a page damaged after its integrity check
//! (an SD card that rots while the appliance runs) can make it panic deep inside a B-tree walk.
//! The release build aborts on panic, so `catch_unwind` cannot help; instead every store call
//! marks its thread with the database it works on, and the panic hook installed by the binary
//! prints one line naming that file and what to do, and exits with 3 ("the database cannot be
//! used") instead of a backtrace and SIGABRT. A restart then meets the damage in the integrity
//! check on open and refuses with the restore command.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

thread_local! {
    static CURRENT: RefCell<Option<Arc<Path>>> = const { RefCell::new(None) };
}

/// Marks the current thread as working on `path` until dropped.
pub(crate) struct Guard {
    prev: Option<Arc<Path>>,
}

impl Guard {
    pub(crate) fn enter(path: &Arc<Path>) -> Guard {
        let prev = CURRENT.with(|c| {
            c.try_borrow_mut()
                .map(|mut c| c.replace(path.clone()))
                .unwrap_or_default()
        });
        Guard { prev }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let prev = self.prev.take();
        CURRENT.with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                *c = prev;
            }
        });
    }
}

/// The exit code of a database that cannot be used (see `edgeauth::error`).
pub const EXIT_DATABASE: i32 = 3;

/// Installs the hook: a panic on a thread inside a store call prints one line and exits 3;
/// any other panic goes to the default hook (a bug: message and backtrace).
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let path = CURRENT.with(|c| c.try_borrow().ok().and_then(|p| p.clone()));
        let Some(path) = path else {
            default(info);
            return;
        };
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        let first = payload.lines().next().unwrap_or("").to_owned();
        eprintln!(
            "edgeauth: database {} is damaged (redb: {first}); stop edgeauth and restore a snapshot with `edgeauth db restore FILE` (`edgeauth db check` reports the damage)",
            path.display()
        );
        crate::logsink::flush();
        std::process::exit(EXIT_DATABASE);
    }));
}
