//! Server-rendered pages and health endpoints over real HTTP.

use crate::helpers::*;

#[tokio::test]
async fn every_page_renders_on_the_server() {
    let app = spawn_app().await;
    for (path, heading) in [
        ("/", "Plans, checkout, credits and invoices that add up."),
        ("/pricing", "Simple plans, credits that add up"),
        ("/billing/success", "No purchase to confirm"),
        ("/signup", "Create your account"),
        ("/login", "Sign in"),
    ] {
        let res = app.client.get(format!("{}{path}", app.address)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let html = res.text().await.unwrap();
        assert!(html.contains(heading), "{path} lacks its heading");
        assert!(html.contains("<html lang=\"en\""), "{path}");
        assert!(
            html.contains(r#"<link rel="stylesheet" id="leptos" href="/pkg/tally.css">"#),
            "{path} lacks the stylesheet"
        );
    }
}

/// Islands: a page loads the wasm exactly when it renders an island, and outside islands
/// nothing is serialized for hydration. /pricing and /billing are plain HTML; the checkout
/// success page's progress is the island that polls.
#[tokio::test]
async fn only_pages_with_islands_load_the_wasm() {
    let app = spawn_app().await;
    let anonymous =
        ["/", "/pricing", "/pricing?billing=yearly", "/signup", "/login", "/forgot-password", "/no/such/page"];
    let mut pages = Vec::new();
    for path in anonymous.iter().chain(&["/billing/success"]) {
        pages.push((path.to_string(), app.page(path).await));
    }
    app.sign_up("islands@example.com").await;
    for path in ["/billing", "/settings/billing", "/pricing", "/billing/success?checkout_id=polar_c_none"] {
        pages.push((format!("{path} (signed in)"), app.page(path).await));
    }
    for (path, html) in &pages {
        let islands = html.matches("<leptos-island").count();
        let loader = html.contains(r#"<link rel="modulepreload" href="/pkg/tally"#);
        assert_eq!(islands > 0, loader, "{path}: {islands} islands, wasm loader {loader}");
        assert_eq!(html.matches("mod.hydrate()").count(), usize::from(loader), "{path}: the loader at most once");
        if islands == 0 {
            assert!(!html.contains("__RESOLVED_RESOURCES["), "{path}: no resource serialized outside an island");
        }
        let plain = path.starts_with("/pricing") || path.starts_with("/billing ") || path == "/";
        assert!(!plain || islands == 0, "{path} is plain HTML");
    }
    let success = &pages.iter().find(|(p, _)| p == "/billing/success").unwrap().1;
    assert!(
        success.contains(r#"<leptos-island data-component="CheckoutProgress_"#),
        "the success page polls in an island"
    );
}

#[tokio::test]
async fn pricing_lists_every_plan_with_formatted_prices() {
    let app = spawn_app().await;
    let html = app.client.get(format!("{}/pricing", app.address)).send().await.unwrap().text().await.unwrap();
    for needle in [
        "Free",
        "Pro",
        "Business",
        "Enterprise",
        "$19",
        "$49",
        "5,000 credits a month",
        "15,000 credits a month",
        "50 credits",
        "100 credits",
    ] {
        assert!(html.contains(needle), "pricing lacks {needle}");
    }
}

#[tokio::test]
async fn account_pages_send_anonymous_visitors_to_sign_in_and_back() {
    let app = spawn_app().await;
    for (path, next) in [("/billing", "%2Fbilling"), ("/settings/billing", "%2Fsettings%2Fbilling")] {
        let res = app.client.get(format!("{}{path}", app.address)).header("accept", "text/html").send().await.unwrap();
        assert_eq!(res.status(), 302, "{path}");
        assert_eq!(res.headers()["location"].to_str().unwrap(), format!("/login?next={next}"));
    }
}

#[tokio::test]
async fn signed_in_users_see_their_billing_page_and_email_in_the_header() {
    let app = spawn_app().await;
    app.sign_up("gu@example.com").await;
    let html = app.client.get(format!("{}/billing", app.address)).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("Your plan"));
    assert!(html.contains(r#"<span data-testid="credits-total">1,000</span>"#), "the free credits are shown");
    assert!(html.contains("a new day starts at 00:00 UTC."), "the accrual day boundary is stated");
    assert!(html.contains("gu@example.com"));
    assert!(html.contains("Sign out"));
}

#[tokio::test]
async fn unknown_paths_get_a_404_page() {
    let app = spawn_app().await;
    let res = app.client.get(format!("{}/no/such/page", app.address)).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("We can't find that page"));
}

#[tokio::test]
async fn health_endpoints_report_process_and_database() {
    let app = spawn_app().await;
    let h: serde_json::Value =
        app.client.get(format!("{}/healthz", app.address)).send().await.unwrap().json().await.unwrap();
    assert_eq!(h["status"], "ok");
    let res = app.client.get(format!("{}/readyz", app.address)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let r: serde_json::Value = res.json().await.unwrap();
    assert_eq!(r["checks"]["database"], "ok");
    assert_eq!(r["checks"]["migrations"], "ok");

    // A database with a pending migration is not ready.
    sqlx::query("DELETE FROM _sqlx_migrations").execute(&app.pool).await.unwrap();
    let res = app.client.get(format!("{}/readyz", app.address)).send().await.unwrap();
    assert_eq!(res.status(), 503);
    let r: serde_json::Value = res.json().await.unwrap();
    assert_eq!(r["checks"]["migrations"], "pending");
}

#[tokio::test]
async fn responses_carry_security_headers() {
    let app = spawn_app().await;
    let res = app.client.get(format!("{}/", app.address)).send().await.unwrap();
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(res.headers()["x-frame-options"], "DENY");
}

/// Starting another app instance in the same process (as tests do) must not stall a page that
/// is rendering: the route list is generated once per process (leptos-rs/leptos#4773).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starting_more_instances_never_stalls_a_render_in_progress() {
    let app = spawn_app().await;
    let (client, address) = (app.client.clone(), app.address.clone());
    let renders = tokio::spawn(async move {
        for _ in 0..40 {
            let res = client
                .get(format!("{address}/pricing"))
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await
                .expect("render finished");
            assert_eq!(res.status(), 200);
            res.text().await.expect("whole body");
        }
    });
    for _ in 0..10 {
        tally::server::startup::Application::build(test_config(&[]), app.pool.clone()).await.unwrap();
    }
    renders.await.unwrap();
}

#[tokio::test]
async fn a_page_looks_its_session_up_once_however_many_parts_ask() {
    let app = spawn_app_with(&[("METRICS_TOKEN", "metrics-token-for-tests")]).await;
    app.sign_up("once@example.com").await;
    let lookups = || async {
        let text = metrics(&app, "metrics-token-for-tests").await;
        text.lines()
            .find_map(|l| l.strip_prefix("tally_session_lookups_total "))
            .expect("the counter is on /metrics")
            .parse::<u64>()
            .unwrap()
    };
    for path in ["/billing", "/settings/billing", "/pricing"] {
        let before = lookups().await;
        let html = app.page(path).await;
        assert!(html.contains("once@example.com"), "{path} rendered for the signed-in user");
        assert_eq!(lookups().await - before, 1, "{path}: the gate, the header and every resource share one lookup");
    }
    // A visitor without a session costs none.
    let before = lookups().await;
    assert_eq!(reqwest::get(format!("{}/pricing", app.address)).await.unwrap().status(), 200);
    assert_eq!(lookups().await, before);
}

/// The site's assets go out precompressed when the build made brotli and gzip files beside
/// them and the browser accepts them; a precompressed file older than its source (a build
/// without that step) is never served, and then none is.
#[tokio::test]
async fn assets_go_out_precompressed_unless_a_precompressed_file_is_stale() {
    let site = std::env::temp_dir().join(format!("tally-site-{}", uuid::Uuid::new_v4()));
    let pkg = site.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    let wasm: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(pkg.join("tally.wasm"), &wasm).unwrap();
    // Stand-ins for what brotli and gzip make: the app sends the files as they are.
    std::fs::write(pkg.join("tally.wasm.br"), b"brotli bytes").unwrap();
    std::fs::write(pkg.join("tally.wasm.gz"), b"gzip bytes").unwrap();
    let get = |app: &TestApp, encoding: Option<&'static str>| {
        let mut req = reqwest::Client::new().get(format!("{}/pkg/tally.wasm", app.address));
        if let Some(e) = encoding {
            req = req.header("accept-encoding", e);
        }
        async move {
            let res = req.send().await.unwrap();
            assert_eq!(res.status(), 200);
            let enc = res.headers().get("content-encoding").map(|v| v.to_str().unwrap().to_string());
            (enc, res.bytes().await.unwrap().to_vec())
        }
    };
    let root = site.to_str().unwrap();
    let app = spawn_app_with(&[("LEPTOS_SITE_ROOT", root)]).await;
    assert_eq!(get(&app, Some("gzip, deflate, br")).await, (Some("br".into()), b"brotli bytes".to_vec()));
    assert_eq!(get(&app, Some("gzip")).await, (Some("gzip".into()), b"gzip bytes".to_vec()));
    assert_eq!(get(&app, None).await, (None, wasm.clone()), "without Accept-Encoding: the file itself");

    // The wasm rebuilt after its brotli file was made: neither precompressed file is served.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(60);
    std::fs::File::options().write(true).open(pkg.join("tally.wasm")).unwrap().set_modified(later).unwrap();
    let app = spawn_app_with(&[("LEPTOS_SITE_ROOT", root)]).await;
    assert_eq!(get(&app, Some("br")).await, (None, wasm.clone()), "br only: the file itself");
    let (enc, body) = get(&app, Some("gzip")).await;
    assert_eq!(enc.as_deref(), Some("gzip"), "compressed on the fly");
    assert_ne!(body, b"gzip bytes".to_vec(), "not the stale file");
    std::fs::remove_dir_all(&site).unwrap();
}

/// A content-hashed file (what a release build makes) is cached for a year, `immutable`; any
/// other is revalidated on each use. Either way it is the same bytes.
#[tokio::test]
async fn hashed_assets_are_cached_for_a_year_and_others_revalidated() {
    let site = std::env::temp_dir().join(format!("tally-site-{}", uuid::Uuid::new_v4()));
    let pkg = site.join("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(pkg.join("tally.Qq1-_w2e3r4t5y6u7i8o9p.css"), "body{}").unwrap();
    std::fs::write(pkg.join("tally.css"), "body{}").unwrap();
    let app = spawn_app_with(&[("LEPTOS_SITE_ROOT", site.to_str().unwrap())]).await;
    for (file, policy) in
        [("tally.Qq1-_w2e3r4t5y6u7i8o9p.css", "public, max-age=31536000, immutable"), ("tally.css", "no-cache")]
    {
        let res = app.client.get(format!("{}/pkg/{file}", app.address)).send().await.unwrap();
        assert_eq!(res.status(), 200, "{file}");
        assert_eq!(res.headers()["cache-control"], policy, "{file}");
        assert_eq!(res.text().await.unwrap(), "body{}");
    }
    let missing = app.client.get(format!("{}/pkg/tally.AAAAAAAAAAAAAAAAAAAAAA.css", app.address)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert!(missing.headers().get("cache-control").is_none(), "a missing file is never cached as immutable");
    std::fs::remove_dir_all(&site).unwrap();
}
