#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! What a person does, in a real headless Chromium (Debian's, from `scripts/tools.sh`, driven
//! through the DevTools protocol by chromiumoxide), against the real Keycloak of the e2e stage
//! (`tests/support/real_keycloak.rs`), through nginx `auth_request` in front of two apps.
//! Chromium resolves `pos.site.lan`, `wiki.site.lan` and `auth.site.lan` to 127.0.0.1
//! (`--host-resolver-rules`), so the session cookie's domain `site.lan` is what carries one
//! sign-in to the second app.
//!
//! Keycloak is cut off with the fault proxy (a black hole between edgeauth and Keycloak, as a
//! dead WAN is), not stopped: the shared server stays up for the other suites.
//!
//! `EDGEAUTH_SCREENSHOTS=1` writes the screenshots the README shows (docs/screenshots/); a
//! normal run only looks, so the PNGs do not change on every run.

mod support;

use std::time::{Duration, Instant};

use chromiumoxide::Page;
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::ScreenshotParams;
use futures_util::StreamExt;
use support::echo_app::EchoApp;
use support::fault_proxy::{Fault, FaultProxy};
use support::proxies::{AUTH, POS, WIKI, nginx_site, site_config, tool};
use support::real_keycloak::{self, RealKeycloak, unique};
use support::{Appliance, free_port, write_secret};

/// How long any one step may take (a page load, a sign-in, a banner to show).
const STEP: Duration = Duration::from_secs(20);

fn behind_proxy(kc: &RealKeycloak, proxy_port: u16) -> (FaultProxy, Appliance) {
    let proxy = FaultProxy::start(kc.url.trim_start_matches("http://"));
    // Written out, not through `appliance_at`: its TOML round trip turns the inline rules into
    // `[[access.rules]]` tables, which `Appliance::new` would merge into one.
    // The site's managers may see /status through the proxy.
    let mut a = Appliance::new(&format!(
        "{}\n[server]\noperator_role = \"site-manager\"\n[keycloak]\nserver = \"{}\"\nrealm = \"{}\"\nclient_id = \"{}\"\n\
         client_secret_file = \"client-secret\"\n[keycloak.resilience]\nfailure_threshold = 2\n\
         cooldown = \"1s\"\nhalf_open_timeout = \"1s\"\nhealth_check_interval = \"1s\"\n\
         health_check_timeout = \"2s\"\nrequest_timeout = \"2s\"\n",
        site_config(proxy_port),
        proxy.url(),
        kc.realm,
        kc.client_id,
    ));
    write_secret(
        &a.dir.path().join("client-secret"),
        &format!("{}\n", kc.client_secret),
    );
    a.start();
    wait_keycloak(&a, "online");
    (proxy, a)
}

/// Waits until `edgeauth status` (over the admin socket: this box's loopback is a trusted
/// proxy here, so the HTTP status API rightly refuses it) says Keycloak is `want`.
fn wait_keycloak(a: &Appliance, want: &str) {
    let started = Instant::now();
    loop {
        let out = a.cli(&["status", "--json"], None);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["keycloak"]["status"] == want {
            return;
        }
        assert!(
            started.elapsed() < STEP,
            "Keycloak never {want}: {}{}",
            support::stdout(&out),
            support::stderr(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn launch(port: u16) -> (Browser, tokio::task::JoinHandle<()>, tempfile::TempDir) {
    let profile = tempfile::tempdir().unwrap();
    let rules = [POS, WIKI, AUTH]
        .map(|h| format!("MAP {h} 127.0.0.1"))
        .join(",");
    let config = BrowserConfig::builder()
        .chrome_executable(tool("EDGEAUTH_CHROMIUM"))
        .no_sandbox()
        .user_data_dir(profile.path())
        .window_size(800, 600)
        .viewport(Viewport {
            width: 800,
            height: 600,
            device_scale_factor: Some(1.0),
            ..Viewport::default()
        })
        // chromiumoxide adds the leading `--`.
        .args([
            "disable-gpu".to_owned(),
            "disable-background-networking".to_owned(),
            "hide-scrollbars".to_owned(),
            "force-device-scale-factor=1".to_owned(),
            format!("host-resolver-rules={rules}"),
        ])
        .build()
        .unwrap();
    let (browser, mut handler) = Browser::launch(config)
        .await
        .unwrap_or_else(|e| panic!("chromium did not start (port {port}): {e}"));
    let events = tokio::spawn(async move { while handler.next().await.is_some() {} });
    (browser, events, profile)
}

/// The page's URL once it starts with `prefix` (within [`STEP`]).
async fn wait_url(page: &Page, prefix: &str) -> String {
    let started = Instant::now();
    loop {
        let url = page.url().await.unwrap().unwrap_or_default();
        if url.starts_with(prefix) {
            return url;
        }
        assert!(
            started.elapsed() < STEP,
            "still at {url}, waiting for {prefix}:\n{}",
            page.content().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The text of the first element matching `selector`, once there is one (within [`STEP`]).
async fn text_of(page: &Page, selector: &str) -> String {
    let started = Instant::now();
    loop {
        if let Ok(e) = page.find_element(selector).await
            && let Ok(Some(t)) = e.inner_text().await
        {
            return t;
        }
        assert!(
            started.elapsed() < STEP,
            "no {selector} on {}:\n{}",
            page.url().await.unwrap().unwrap_or_default(),
            page.content().await.unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open(page: &Page, url: &str) {
    page.goto(url)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
}

/// Types into the login form and submits it, as a person does.
async fn sign_in(page: &Page, user: &str, password: &str) {
    text_of(page, "form#login").await;
    for (name, value) in [("username", user), ("password", password)] {
        page.find_element(format!("form#login input[name={name}]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap()
            .type_str(value)
            .await
            .unwrap();
    }
    page.find_element("form#login [type=submit]")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Signs out through the /logout form.
async fn sign_out(page: &Page, base: &str) {
    open(page, &format!("{base}/logout")).await;
    text_of(page, "form").await;
    page.find_element("form [type=submit]")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    text_of(page, "#signed-out").await;
}

/// Writes docs/screenshots/NAME.png when EDGEAUTH_SCREENSHOTS=1.
async fn screenshot(page: &Page, name: &str) {
    if std::env::var("EDGEAUTH_SCREENSHOTS").as_deref() != Ok("1") {
        return;
    }
    let png = page
        .screenshot(
            ScreenshotParams::builder()
                .format(CaptureScreenshotFormat::Png)
                .build(),
        )
        .await
        .unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_once_for_two_apps_and_again_while_keycloak_is_unreachable() {
    // The only test of this binary, and the suites run one after another: no lock needed.
    let kc = real_keycloak::shared();
    // Her own account (the other suites change the fixture's users): staff for the wiki, a
    // site manager for /status.
    let user = unique("till");
    let password = "till-password-1";
    kc.create_user(&user, password, &["staff", "site-manager"], &[]);
    let port = free_port();
    let (wan, a) = behind_proxy(kc, port);
    let (pos, wiki) = (EchoApp::start("pos"), EchoApp::start("wiki"));
    let nginx = nginx_site(
        port,
        &format!("127.0.0.1:{}", a.port),
        &[(POS, &pos.addr()), (WIKI, &wiki.addr())],
    );
    let (pos_url, wiki_url, auth) = (
        format!("http://{POS}:{port}"),
        format!("http://{WIKI}:{port}"),
        format!("http://{AUTH}:{port}"),
    );
    let (mut browser, events, _profile) = launch(port).await;
    let journey = async {
        let page = browser.new_page("about:blank").await.unwrap();

        // Opens an app and lands on the login page, which will send her back.
        open(&page, &format!("{pos_url}/till?table=4")).await;
        let login = wait_url(&page, &format!("{auth}/login?rd=")).await;
        assert!(login.contains("pos.site.lan"), "{login}");
        assert!(
            page.find_element("#offline-banner").await.is_err(),
            "no offline banner while Keycloak answers"
        );
        screenshot(&page, "login").await;

        // Signs in with her Keycloak password and is back at the app, which knows her.
        sign_in(&page, &user, password).await;
        wait_url(&page, &format!("{pos_url}/till?table=4")).await;
        assert_eq!(text_of(&page, "#user").await, user);
        assert_eq!(text_of(&page, "#h-remote-auth-mode").await, "keycloak");
        assert_eq!(text_of(&page, "#h-remote-keycloak-status").await, "online");

        // The second app, without signing in again (the cookie is for site.lan).
        open(&page, &format!("{wiki_url}/")).await;
        wait_url(&page, &wiki_url).await;
        assert_eq!(text_of(&page, "#app").await, "wiki");
        assert_eq!(text_of(&page, "#user").await, user);

        // Signs out; both apps ask again.
        sign_out(&page, &auth).await;
        open(&page, &format!("{wiki_url}/")).await;
        wait_url(&page, &format!("{auth}/login?rd=")).await;

        // The WAN to Keycloak is cut: the login page says so, and her password still works
        // (checked against what the site stored at her last online sign-in).
        tokio::task::block_in_place(|| {
            wan.set(Fault::BlackHole);
            wait_keycloak(&a, "offline");
        });
        open(&page, &format!("{pos_url}/till")).await;
        wait_url(&page, &format!("{auth}/login?rd=")).await;
        let banner = text_of(&page, "#offline-banner").await;
        assert!(
            banner.contains("central sign-in is unreachable"),
            "{banner}"
        );
        screenshot(&page, "login-offline").await;
        sign_in(&page, &user, password).await;
        wait_url(&page, &format!("{pos_url}/till")).await;
        assert_eq!(text_of(&page, "#user").await, user);
        assert_eq!(text_of(&page, "#h-remote-auth-mode").await, "cached");
        assert_eq!(text_of(&page, "#h-remote-keycloak-status").await, "offline");
        open(&page, &format!("{wiki_url}/")).await;
        assert_eq!(text_of(&page, "#user").await, user);

        // The operator's view (she is a site manager, the operator role here).
        open(&page, &format!("{auth}/status")).await;
        let status = text_of(&page, "body").await;
        assert!(status.contains("offline"), "{status}");
        screenshot(&page, "status").await;

        // Signs out at the end of the shift.
        sign_out(&page, &auth).await;
        open(&page, &format!("{pos_url}/till")).await;
        wait_url(&page, &format!("{auth}/login?rd=")).await;
    };
    let outcome = tokio::time::timeout(Duration::from_secs(120), journey).await;
    wan.set(Fault::Pass);
    let _ = browser.close().await;
    let _ = browser.wait().await;
    events.abort();
    assert!(
        outcome.is_ok(),
        "the journey took over 120 s\n--- nginx\n{}\n--- edgeauth\n{}",
        nginx.log(),
        a.log()
    );
}
