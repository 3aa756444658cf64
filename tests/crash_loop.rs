//! The crash loop (issue 12, design rule 3): `kill -9` at random points in a mix of
//! acknowledged writes (logins, password changes, user adds through the admin socket), many
//! rounds; after each restart every write that was answered 2xx must be there.
//!
//! `cargo test --test crash_loop` runs a short loop (a few rounds, seconds);
//! `scripts/crash-loop.sh ROUNDS` runs a long one. Both print
//! `crash loop: R rounds, A acknowledged writes, L lost (seed S)`.
//! `EDGEAUTH_CRASH_ROUNDS` and `EDGEAUTH_CRASH_SEED` set the rounds and the seed.

// A test crate: unwrap, expect and panic are how it fails (Cargo.toml [lints] is for the product).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::Appliance;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// SplitMix64's output function: decorrelates a seed from the stream it was drawn from.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Clone, Default)]
struct User {
    password: String,
    /// A change sent but not answered when the process died: either may be in force.
    pending: Option<String>,
}

#[derive(Default)]
struct Ledger {
    users: BTreeMap<String, User>,
    /// Sessions answered 200, with the round they were made in.
    sessions: Vec<(String, usize)>,
    /// A user add sent but not answered.
    pending_user: Option<(String, String)>,
    acknowledged: u64,
    next_user: u64,
}

struct Client {
    agent: ureq::Agent,
    port: u16,
    config: PathBuf,
}

impl Client {
    fn post(&self, path: &str, body: serde_json::Value) -> Option<(u16, serde_json::Value)> {
        let res = self
            .agent
            .post(format!("http://127.0.0.1:{}{path}", self.port))
            .header("content-type", "application/json")
            .send(body.to_string())
            .ok()?;
        let status = res.status().as_u16();
        let text = res.into_body().read_to_string().ok()?;
        Some((status, serde_json::from_str(&text).unwrap_or_default()))
    }
}

/// Writes until the server dies under it (or `stop`); every 2xx goes into the ledger.
fn workload(c: &Client, ledger: &mut Ledger, rng: &mut Rng, round: usize, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let names: Vec<String> = ledger.users.keys().cloned().collect();
        let name = names[rng.below(names.len() as u64) as usize].clone();
        match rng.below(10) {
            0..=6 => {
                let pw = ledger.users[&name].password.clone();
                match c.post(
                    "/api/v1/login",
                    serde_json::json!({"username": name, "password": pw}),
                ) {
                    Some((200, body)) => {
                        let sid = body["session_id"].as_str().unwrap_or_default().to_owned();
                        ledger.sessions.push((sid, round));
                        ledger.acknowledged += 1;
                    }
                    Some((status, body)) => panic!("login {name}: {status} {body}"),
                    None => return,
                }
            }
            7 | 8 => {
                let old = ledger.users[&name].password.clone();
                let new = format!("{name}-pw-{}", rng.next() % 1_000_000_000);
                if let Some(u) = ledger.users.get_mut(&name) {
                    u.pending = Some(new.clone());
                }
                match c.post(
                    "/api/v1/password",
                    serde_json::json!({"username": name, "old_password": old, "new_password": new}),
                ) {
                    Some((200, _)) => {
                        if let Some(u) = ledger.users.get_mut(&name) {
                            *u = User {
                                password: new,
                                pending: None,
                            };
                        }
                        ledger.acknowledged += 1;
                    }
                    Some((status, body)) => panic!("password {name}: {status} {body}"),
                    None => return,
                }
            }
            _ => {
                ledger.next_user += 1;
                let (user, pw) = (
                    format!("add{}", ledger.next_user),
                    format!("add-password-{}", ledger.next_user),
                );
                ledger.pending_user = Some((user.clone(), pw.clone()));
                let out = support::cli_with(
                    &c.config,
                    &["user", "add", &user, "--local", "--password-stdin"],
                    Some(&format!("{pw}\n")),
                );
                if !out.status.success() {
                    return;
                }
                ledger.pending_user = None;
                ledger.users.insert(
                    user,
                    User {
                        password: pw,
                        pending: None,
                    },
                );
                ledger.acknowledged += 1;
            }
        }
    }
}

/// Checks the ledger against the restarted server; returns how many acknowledged writes are
/// missing. Sessions of `round` and a sample of older ones are checked (all when `all`).
fn verify(a: &Appliance, ledger: &mut Ledger, rng: &mut Rng, round: usize, all: bool) -> u64 {
    let mut lost = 0;
    for (sid, made) in &ledger.sessions {
        if !all && *made + 1 != round && rng.below(20) != 0 {
            continue;
        }
        let r = a.check_session(sid);
        // A later password change ends the user's other sessions: revoked, not lost.
        if !(r.status == 200 || r.body["reason"] == "revoked") {
            eprintln!("LOST session of round {made}: {} {}", r.status, r.text);
            lost += 1;
        }
    }
    if let Some((user, pw)) = ledger.pending_user.take() {
        let show = a.cli(&["user", "show", &user], None);
        if show.status.success() {
            ledger.users.insert(
                user,
                User {
                    password: pw,
                    pending: None,
                },
            );
        }
    }
    for (name, u) in ledger.users.iter_mut() {
        let mut tries = vec![u.password.clone()];
        tries.extend(u.pending.take());
        let ok = tries.into_iter().find(|pw| a.login(name, pw).status == 200);
        match ok {
            Some(pw) => u.password = pw,
            None => {
                eprintln!("LOST user {name} or their acknowledged password");
                lost += 1;
            }
        }
    }
    lost
}

#[test]
fn kill_9_at_random_points_loses_no_acknowledged_write() {
    let rounds: usize = std::env::var("EDGEAUTH_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("EDGEAUTH_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    let mut rng = Rng(seed);
    let mut a = Appliance::new(
        "[regulation]\nmax_retries = 1000\nmax_retries_per_ip = 100000\n[backup]\nsnapshots = 0\n",
    );
    let mut ledger = Ledger::default();
    for i in 0..4 {
        let (name, pw) = (format!("user{i}"), format!("user{i}-password"));
        a.add_user(&name, &pw, &[]);
        ledger.users.insert(
            name,
            User {
                password: pw,
                pending: None,
            },
        );
    }
    let mut lost = 0;
    for round in 0..rounds {
        a.start();
        if round > 0 {
            lost += verify(&a, &mut ledger, &mut rng, round, false);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let client = Client {
            agent: support::agent(),
            port: a.port,
            config: a.config.clone(),
        };
        // A seed drawn from the same xorshift stream would replay that stream a few steps on
        // (each round repeating the last one's choices, down to a "new" password equal to the
        // old): mix it first, so each round's stream is its own.
        let mut worker_rng = Rng(splitmix64(rng.next()) | 1);
        let stop2 = stop.clone();
        let worker = std::thread::spawn(move || {
            let mut l = ledger;
            workload(&client, &mut l, &mut worker_rng, round, &stop2);
            l
        });
        std::thread::sleep(Duration::from_millis(150 + rng.below(600)));
        a.kill9();
        stop.store(true, Ordering::Relaxed);
        ledger = worker.join().expect("the workload thread");
    }
    a.start();
    lost += verify(&a, &mut ledger, &mut rng, rounds, true);
    a.stop();
    println!(
        "crash loop: {rounds} rounds, {} acknowledged writes, {lost} lost (seed {seed})",
        ledger.acknowledged
    );
    assert_eq!(lost, 0, "acknowledged writes were lost (seed {seed})");
    assert!(ledger.acknowledged > 0);
}
