//! The local Polar stand-in: Polar's HTTP API (the endpoints Tally uses, with Polar's paths,
//! status codes, bodies and error shapes), its hosted checkout and customer portal pages,
//! invoices, Customer State, and signed webhook deliveries with retries; plus controls for
//! tests and demos (clock, failed renewals, refunds, duplicate or shuffled deliveries, outages).
//!
//! The app mounts it at `/polar` when `POLAR_MODE=local` (the default); tests also start it
//! alone on its own port ([`StandIn::serve`]). It is Polar for everything Tally does and is
//! reached over real HTTP, never by a shortcut. Its data lives in memory and, for the app,
//! in a JSON file under `.data/` so a restart keeps customers and subscriptions.

mod api;
mod controls;
mod invoice;
mod ops;
mod pages;
mod sender;
mod tax;
pub mod world;

use crate::domain::plans::{BUSINESS, PACKS, PRO};
use chrono::{DateTime, Utc};
use ops::Events;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use world::{stable_id, Benefit, Org, Product, World};

pub use sender::{DeliveryRecord, WebhookEndpoint};

/// How the stand-in behaves. [`StandinConfig::new`] gives Polar-like defaults.
#[derive(Debug, Clone)]
pub struct StandinConfig {
    /// The URL the stand-in is reached at (API base and hosted pages), without trailing slash.
    pub public_url: String,
    /// Bearer tokens it accepts (Organization Access Tokens).
    pub access_tokens: Vec<String>,
    pub org_name: String,
    pub org_slug: String,
    /// Where webhooks go, and under which key scheme each is signed.
    pub endpoints: Vec<WebhookEndpoint>,
    /// How long "processing payment" takes on the hosted checkout (uniform in the range).
    pub payment_delay: (Duration, Duration),
    /// How long invoice generation takes.
    pub invoice_delay: Duration,
    /// How far Customer State lags behind (Polar serves it from a cache).
    pub state_lag: Duration,
    /// First webhook retry delay; later ones double (Polar: 2 s, up to 10 attempts).
    pub retry_base: Duration,
    pub max_attempts: u32,
    /// Days of trial on the subscription products (none by default).
    pub trial_days: Option<i64>,
    /// Prices in cents and monthly credits of the plans, and the packs' credits and prices.
    pub pro: (i64, i64),
    pub business: (i64, i64),
    pub packs: Vec<(i64, i64)>,
    /// The metered overage price of the monthly Pro and Business products (`None`: none).
    pub pro_overage: Option<crate::domain::usage::OverageTerms>,
    pub business_overage: Option<crate::domain::usage::OverageTerms>,
    /// Polar's own credits model instead of Tally's: the monthly plans get a `meter_credit`
    /// benefit of their monthly credits on the credits meter (reset each cycle), and their
    /// metered price bills that meter's negative balance. Off by default: Tally keeps the
    /// allotment in its ledger and bills only overage through the overage meter.
    pub meter_credits: bool,
    /// Where to keep the data between restarts (none: memory only).
    pub state_file: Option<PathBuf>,
    /// The bearer token the test controls (`/_standin/…`) require. `None` leaves them open,
    /// which only a stand-in alone on a test's own port may do; the app always sets one.
    pub controls_token: Option<String>,
    /// API requests allowed per minute, as Polar's quota (`None`: unlimited).
    pub rate_limit_per_minute: Option<u32>,
}

impl StandinConfig {
    pub fn new(public_url: impl Into<String>, access_token: impl Into<String>) -> Self {
        StandinConfig {
            public_url: public_url.into().trim_end_matches('/').to_string(),
            access_tokens: vec![access_token.into()],
            org_name: "Tally Demo".into(),
            org_slug: "tally-demo".into(),
            endpoints: vec![],
            payment_delay: (Duration::from_millis(1000), Duration::from_millis(2000)),
            invoice_delay: Duration::from_millis(1500),
            state_lag: Duration::ZERO,
            retry_base: Duration::from_secs(2),
            max_attempts: 10,
            trial_days: None,
            pro: (PRO.monthly_price_cents, PRO.monthly_credits),
            business: (BUSINESS.monthly_price_cents, BUSINESS.monthly_credits),
            packs: PACKS.iter().map(|p| (p.credits, p.price_cents)).collect(),
            pro_overage: PRO.overage,
            business_overage: BUSINESS.overage,
            meter_credits: false,
            state_file: None,
            controls_token: None,
            rate_limit_per_minute: Some(500),
        }
    }
}

pub use crate::server::catalog::standin_product_id as product_id;

/// Runtime switches set through the controls.
#[derive(Debug, Default)]
struct Controls {
    clock_offset: chrono::Duration,
    /// `Some(None)`: the next renewal of any subscription fails; `Some(Some(id))`: of that one.
    fail_next_renewal: Option<Option<String>>,
    duplicate_next: u32,
    shuffle_next: bool,
    /// Until switched off: every batch is delivered this many extra times / shuffled.
    chaos_duplicate: u32,
    chaos_shuffle: bool,
    outage: Option<Outage>,
    /// Usage events (by `external_id`) that ingestion refuses with a 422 naming them, as
    /// Polar refuses an event it finds invalid (the whole batch, nothing inserted).
    refuse_events: Vec<String>,
    /// Customers (by `external_id`) whose webhooks are lost: never delivered, as when an
    /// endpoint is down for longer than Polar retries.
    lose_webhooks_for: Vec<String>,
    /// Every API request received (method, path), oldest first, for tests.
    requests: Vec<(String, String)>,
    /// The current rate-limit window: when it began and how many requests it counted.
    rate_window: Option<(std::time::Instant, u32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutageKind {
    ServerError,
    Timeout,
    RateLimited { retry_after: u64 },
}

#[derive(Debug, Clone)]
struct Outage {
    kind: OutageKind,
    remaining: u32,
}

struct Inner {
    config: StandinConfig,
    world: Mutex<World>,
    controls: Mutex<Controls>,
    sender: sender::Sender,
    file_key: [u8; 32],
    /// Customers whose meters wait for their debounced recompute (`recompute_meters_later`).
    recomputing: Mutex<std::collections::HashSet<String>>,
}

/// A running stand-in. Cheap to clone.
#[derive(Clone)]
pub struct StandIn {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl StandIn {
    /// Seeds the catalogue (or loads the saved state) and starts the clock task. Needs a
    /// Tokio runtime.
    pub fn start(config: StandinConfig) -> StandIn {
        let mut world = config
            .state_file
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<World>(&b).ok())
            .unwrap_or_default();
        world.frontend_url = config.public_url.clone();
        seed(&mut world, &config);
        let mut file_key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut file_key);
        let sender = sender::Sender::new(config.endpoints.clone(), config.retry_base, config.max_attempts);
        let standin = StandIn {
            inner: Arc::new(Inner {
                config,
                world: Mutex::new(world),
                controls: Mutex::new(Controls::default()),
                sender,
                file_key,
                recomputing: Mutex::default(),
            }),
        };
        // Polar's scheduler: renewals and checkout expiry happen on their own.
        let weak = Arc::downgrade(&standin.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Some(inner) = weak.upgrade() else { break };
                StandIn { inner }.mutate(|_, _, _| ());
            }
        });
        standin
    }

    pub fn config(&self) -> &StandinConfig {
        &self.inner.config
    }

    /// The stand-in's clock: real time plus what the controls advanced it by.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + lock(&self.inner.controls).clock_offset
    }

    /// Reads the world.
    fn read<R>(&self, f: impl FnOnce(&World, DateTime<Utc>) -> R) -> R {
        let now = self.now();
        let w = lock(&self.inner.world);
        f(&w, now)
    }

    /// Changes the world: first what Polar's scheduler would have done by now (expiries,
    /// renewals), then `f`; saves, then sends the webhooks all of it produced.
    fn mutate<R>(&self, f: impl FnOnce(&mut World, DateTime<Utc>, &mut Events) -> R) -> R {
        let now = self.now();
        let mut ev = Events::default();
        let r = {
            let mut w = lock(&self.inner.world);
            w.expire_checkouts(now, &mut ev);
            let mut fail = |id: &str| {
                let mut c = lock(&self.inner.controls);
                match &c.fail_next_renewal {
                    Some(None) => {
                        c.fail_next_renewal = None;
                        true
                    }
                    Some(Some(s)) if s == id => {
                        c.fail_next_renewal = None;
                        true
                    }
                    _ => false,
                }
            };
            w.run_renewals(now, &mut fail, &mut ev);
            let r = f(&mut w, now, &mut ev);
            if !ev.0.is_empty() {
                self.save(&w);
            }
            r
        };
        self.dispatch(ev);
        r
    }

    fn save(&self, w: &World) {
        let Some(path) = &self.inner.config.state_file else { return };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec(w)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(error = %e, path = %path.display(), "could not save the Polar stand-in's state");
        }
    }

    fn dispatch(&self, mut events: Events) {
        if events.0.is_empty() {
            return;
        }
        let (duplicate, shuffle) = {
            let mut c = lock(&self.inner.controls);
            if !c.lose_webhooks_for.is_empty() {
                let lost = &c.lose_webhooks_for;
                events.0.retain(|e| {
                    let about = e.data.to_string();
                    !lost.iter().any(|x| about.contains(x.as_str()))
                });
            }
            let d = std::mem::take(&mut c.duplicate_next).max(c.chaos_duplicate);
            let s = std::mem::take(&mut c.shuffle_next) || c.chaos_shuffle;
            (d, s)
        };
        self.inner.sender.send_batch(events.0, duplicate, shuffle);
    }

    /// Webhooks about these customers (external ids) are lost from now on (empty: none).
    pub fn lose_webhooks_for(&self, external_ids: Vec<String>) {
        lock(&self.inner.controls).lose_webhooks_for = external_ids;
    }

    /// Every API request so far, `(method, path)` (for tests and the controls).
    pub fn requests(&self) -> Vec<(String, String)> {
        lock(&self.inner.controls).requests.clone()
    }

    /// Every delivery attempt so far (for tests and the controls).
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.inner.sender.log()
    }

    pub fn add_endpoint(&self, endpoint: WebhookEndpoint) {
        self.inner.sender.add_endpoint(endpoint);
    }

    /// The router: API under `/v1`, hosted pages, invoice files and the controls under
    /// `/_standin`. Mount it where `public_url` points.
    pub fn router(&self) -> axum::Router {
        axum::Router::new()
            .merge(api::routes(self.clone()))
            .merge(pages::routes(self.clone()))
            .merge(controls::routes(self.clone()))
    }

    /// Serves the stand-in alone on `listener` (tests).
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    /// After an invoice was asked for: `order.updated` with `is_invoice_generated: true`
    /// (Polar's readiness signal) once generation is done.
    fn announce_invoice_when_ready(&self, order_id: String) {
        let s = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(s.inner.config.invoice_delay).await;
            s.mutate(|w, now, ev| {
                if let Some(o) = w.orders.iter().find(|o| o.id == order_id) {
                    ev.0.push(ops::Event {
                        event_type: "order.updated".into(),
                        timestamp: now,
                        data: w.order_json(o, now),
                    });
                }
            });
        });
    }

    /// After usage events for `customers` arrived: once their meters are recomputed
    /// (`POLAR_STANDIN_STATE_LAG_MS` later, debounced per customer as Polar does), one
    /// `customer.state_changed` each with the new `active_meters`.
    fn recompute_meters_later(&self, customers: Vec<String>) {
        let fresh: Vec<String> = {
            let mut pending = lock(&self.inner.recomputing);
            customers.into_iter().filter(|c| pending.insert(c.clone())).collect()
        };
        if fresh.is_empty() {
            return;
        }
        let s = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(s.inner.config.state_lag).await;
            {
                let mut pending = lock(&s.inner.recomputing);
                for c in &fresh {
                    pending.remove(c);
                }
            }
            s.mutate(|w, now, ev| {
                for c in &fresh {
                    w.state_changed(ev, c, now);
                }
            });
        });
    }

    fn file_mac(&self, order_id: &str) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.inner.file_key).expect("any key length");
        m.update(order_id.as_bytes());
        m
    }

    /// The signature that makes an invoice file URL valid (the MAC's first 16 bytes, hex).
    fn file_signature(&self, order_id: &str) -> String {
        use hmac::Mac;
        hex::encode(&self.file_mac(order_id).finalize().into_bytes()[..16])
    }

    /// Checks a file URL's signature in constant time.
    fn file_signature_ok(&self, order_id: &str, sig_hex: &str) -> bool {
        use hmac::Mac;
        hex::decode(sig_hex)
            .is_ok_and(|sig| sig.len() == 16 && self.file_mac(order_id).verify_truncated_left(&sig).is_ok())
    }
}

fn meta(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// The organization and its catalogue: Pro and Business monthly subscriptions whose benefits
/// carry `slug` and `monthly_credits`, and one-time credit packs whose benefit carries `credits`.
fn seed(world: &mut World, config: &StandinConfig) {
    let created = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("valid").with_timezone(&Utc);
    world.org = Some(Org { id: stable_id("org"), name: config.org_name.clone(), slug: config.org_slug.clone() });
    let benefit = |key: &str, description: &str, metadata: Map<String, Value>| Benefit {
        id: stable_id(&format!("benefit/{key}")),
        description: description.into(),
        metadata,
        created_at: created,
        meter_credit: None,
    };
    let mut products = vec![];
    // Each plan monthly, and yearly for ten months' price; both grant the plan's benefit.
    let plans = [
        ("pro", "Pro", config.pro, config.pro_overage),
        ("business", "Business", config.business, config.business_overage),
    ];
    for (key, name, (price, credits), overage) in plans {
        let plan_benefit =
            benefit(key, &format!("{name} plan"), meta(&[("slug", json!(key)), ("monthly_credits", json!(credits))]));
        for (interval, suffix, amount) in [("month", "", price), ("year", "_yearly", price * 10)] {
            let product_key = format!("{key}{suffix}");
            products.push(Product {
                id: product_id(&product_key),
                price_id: stable_id(&format!("price/{product_key}")),
                name: if suffix.is_empty() { name.into() } else { format!("{name} (yearly)") },
                description: Some(format!("{credits} credits a month")),
                recurring_interval: Some(interval.into()),
                price_amount: amount,
                currency: "usd".into(),
                metadata: meta(&[("plan", json!(key)), ("monthly_credits", json!(credits))]),
                benefits: vec![plan_benefit.clone()],
                trial_days: config.trial_days,
                created_at: created,
                // Overage is billed per month: the monthly product carries the metered price.
                overage: overage.filter(|_| suffix.is_empty()),
                metered_meter_id: if config.meter_credits {
                    world::credits_meter_id()
                } else {
                    world::overage_meter_id()
                },
            });
            if config.meter_credits && suffix.is_empty() {
                let credit = Benefit {
                    meter_credit: Some(world::MeterCredit {
                        units: credits,
                        rollover: false,
                        meter_id: world::credits_meter_id(),
                    }),
                    ..benefit(&format!("{key}-credits"), &format!("{credits} API credits a month"), Map::new())
                };
                products.last_mut().expect("just pushed").benefits.push(credit);
            }
        }
    }
    for (credits, price) in &config.packs {
        let key = format!("pack_{credits}");
        products.push(Product {
            id: product_id(&key),
            price_id: stable_id(&format!("price/{key}")),
            name: format!("{credits} credits"),
            description: Some(format!("A one-time pack of {credits} credits that never expire")),
            recurring_interval: None,
            price_amount: *price,
            currency: "usd".into(),
            metadata: meta(&[("credits", json!(credits))]),
            benefits: vec![benefit(
                &key,
                &format!("{credits} credits"),
                meta(&[("slug", json!(key)), ("credits", json!(credits))]),
            )],
            trial_days: None,
            created_at: created,
            overage: None,
            metered_meter_id: world::overage_meter_id(),
        });
    }
    world.products = products;
}
