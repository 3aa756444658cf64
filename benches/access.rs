//! The access-rule matcher on the forward-auth hot path: a site-sized rule list, requests that
//! reach the last rule, and the slow path of a path that needs normalising. It must not
//! allocate (checked by a counting allocator before the timings).

// A bench crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use edgeauth::access::{Request, Rules, Verdict};
use edgeauth::auth::principal::{Subject, Via};
use edgeauth::config::Config;
use edgeauth::domain::AuthMode;

/// Counts this thread's allocations.
struct Counting;

thread_local! {
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const SITE: &str = r#"
[[access.rules]]
paths = ["/health", "/static/", "/favicon.ico"]
policy = "bypass"

[[access.rules]]
networks = ["192.168.50.0/24", "fd00:50::/64"]
policy = "deny"

[[access.rules]]
hosts = ["pos.site.lan"]
methods = ["GET", "POST"]
roles = ["cashier", "manager"]
policy = "allow"

[[access.rules]]
hosts = ["*.site.lan"]
path_regex = "/admin(/.*)?"
groups = ["/it/admins"]
client_roles = ["wiki:admin"]
require = "all"
policy = "allow"

[[access.rules]]
hosts = ["wiki.site.lan", "files.site.lan"]
paths = ["/api"]
introspect = true
policy = "allow"

[[access.rules]]
hosts = ["wiki.site.lan"]
groups = ["staff", "/front-desk"]
policy = "allow"
"#;

fn rules() -> Rules {
    let c = Config::parse(SITE, "bench.toml", Path::new("/")).unwrap();
    Rules::new(&c.access)
}

fn bench_access(c: &mut Criterion) {
    let rules = rules();
    let (roles, client_roles, groups) = (
        vec!["viewer".to_owned()],
        vec!["wiki:reader".to_owned()],
        vec!["/staff".to_owned(), "/front-desk".to_owned()],
    );
    let subject = Subject {
        tenant: "default",
        username: "anna",
        name: None,
        email: None,
        roles: &roles,
        client_roles: &client_roles,
        groups: &groups,
        auth_mode: AuthMode::Keycloak,
        via: Via::Session,
    };
    let last = Request {
        host: "wiki.site.lan",
        path: "/pages/Front_Desk/rota?week=48",
        method: "GET",
        ip: Some([10, 0, 0, 7].into()),
    };
    let encoded = Request {
        path: "/pages/Front%20Desk/./rota/../rota",
        ..last
    };
    for req in [&last, &encoded] {
        // The first match fills the regex's cache for this thread; after that, nothing.
        assert_eq!(
            rules.find(req).decide(Some(&subject)).verdict,
            Verdict::Allow
        );
        let before = ALLOCS.with(Cell::get);
        for _ in 0..100 {
            let d = rules.find(req).decide(Some(&subject));
            assert_eq!(d.verdict, Verdict::Allow);
        }
        assert_eq!(ALLOCS.with(Cell::get), before, "the matcher allocated");
    }
    c.bench_function("access: 6 rules, the last decides", |b| {
        b.iter(|| black_box(rules.find(black_box(&last)).decide(Some(&subject))).verdict)
    });
    c.bench_function("access: a path to normalise", |b| {
        b.iter(|| black_box(rules.find(black_box(&encoded)).decide(Some(&subject))).verdict)
    });
}

criterion_group!(benches, bench_access);
criterion_main!(benches);
