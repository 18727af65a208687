//! Checkouts: what the browser may buy (an item slug, mapped to a Polar product by the
//! server's catalogue only), and where a checkout stands for the success page. A checkout is
//! recorded as its user's when Tally creates it, so a foreign checkout id is a 404 that costs
//! no call to Polar.

use super::customer_state::customer_state;
use super::invoices::remember_order;
use super::subscriptions::current_subscription;
use super::Billing;
use super::{polar_budget, polar_for, polar_reads, Error, Result};
use crate::domain::plans::Item;
use crate::server::polar::client::CheckoutCreate;
use crate::server::polar::models::CheckoutStatus;
use crate::server::polar::PolarError;
use chrono::Duration;
use serde_json::Value;
use uuid::Uuid;

/// The item a slug names and the product it is sold as on this server.
pub fn item_for_sale(billing: &Billing, slug: &str) -> Result<(Item, String)> {
    let item = Item::from_slug(slug).ok_or_else(|| Error::invalid("item", "Choose a plan or a credit pack to buy."))?;
    let product = billing
        .config
        .polar
        .catalog
        .product(item)
        .ok_or_else(|| Error::invalid("item", "That item is not for sale on this server."))?;
    Ok((item, product.to_string()))
}

/// Creates a Polar checkout for the signed-in user and returns its URL.
pub async fn start_checkout(billing: &Billing, user: Uuid, email: &str, slug: &str) -> Result<String> {
    let (item, product) = item_for_sale(billing, slug)?;
    if item.is_plan() && current_subscription(billing, user).await?.is_some() {
        return Err(Error::Conflict(
            "You already have a subscription. Change your plan from the billing page instead.".into(),
        ));
    }
    let details = super::details::billing_details(&billing.pool, user).await?;
    let app = billing.config.app_url.as_str().trim_end_matches('/');
    let body = CheckoutCreate {
        products: vec![product],
        external_customer_id: Some(user.to_string()),
        customer_email: Some(
            details.as_ref().and_then(|d| d.billing_email.clone()).unwrap_or_else(|| email.to_string()),
        ),
        customer_billing_name: details.as_ref().and_then(|d| d.company.clone()),
        customer_billing_address: details.as_ref().map(|d| d.address()),
        customer_tax_id: details.as_ref().and_then(|d| d.tax_id.clone()),
        success_url: Some(format!("{app}/billing/success?checkout_id={{CHECKOUT_ID}}")),
        return_url: Some(format!("{app}/pricing")),
        metadata: [("tally_item".to_string(), Value::String(item.slug()))].into_iter().collect(),
        ..Default::default()
    };
    let checkout = polar_for(billing, user).await?.create_checkout(&body).await?;
    sqlx::query("INSERT INTO checkouts (id, user_id, item) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING")
        .bind(&checkout.id)
        .bind(user)
        .bind(item.slug())
        .execute(&billing.pool)
        .await?;
    tracing::info!(%user, checkout = %checkout.id, item = %item.slug(), "checkout created");
    Ok(checkout.url)
}

/// Where a checkout stands, for the success page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Paid or being paid; access not confirmed yet.
    Processing,
    /// Access confirmed: the plan's benefit is granted, or the pack's credits are in the ledger.
    Ready {
        what: String,
        is_plan: bool,
    },
    Expired,
    Failed,
}

pub async fn checkout_progress(billing: &Billing, user: Uuid, checkout_id: &str) -> Result<Progress> {
    if Uuid::parse_str(checkout_id).is_err() {
        return Err(Error::NotFound);
    }
    // Someone else's checkout (or one Tally never made) looks like no checkout at all, and
    // costs no call to Polar.
    let ours: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM checkouts WHERE id = $1 AND user_id = $2)")
        .bind(checkout_id)
        .bind(user)
        .fetch_one(&billing.pool)
        .await?;
    if !ours {
        return Err(Error::NotFound);
    }
    // The success page polls: over budget, it is simply still processing (and polls slower).
    if let Err(Error::RateLimited(_)) = polar_budget(billing, user).await {
        return Ok(Progress::Processing);
    }
    let client = polar_reads(billing)?;
    let checkout = match client.get_checkout(checkout_id).await {
        Ok(c) => c,
        Err(PolarError::NotFound { .. }) => return Err(Error::NotFound),
        Err(e) => return Err(e.into()),
    };
    if checkout.external_customer_id.as_deref() != Some(user.to_string().as_str()) {
        return Err(Error::NotFound);
    }
    match checkout.status {
        CheckoutStatus::Expired => return Ok(Progress::Expired),
        CheckoutStatus::Failed => return Ok(Progress::Failed),
        CheckoutStatus::Succeeded => {}
        _ => return Ok(Progress::Processing),
    }
    let item = checkout.product_id.as_deref().and_then(|p| billing.config.polar.catalog.item(p));
    if let Some(Item::Plan { plan, .. }) = item {
        // Fresh from Polar: the cache must not hide the moment access appears.
        let read = customer_state(billing, user, Duration::zero()).await?;
        return Ok(if read.has_benefit(plan.slug()) {
            Progress::Ready { what: plan.name().to_string(), is_plan: true }
        } else {
            Progress::Processing
        });
    }
    let orders = client.orders_for_checkout(checkout_id).await?;
    let Some(order) = orders.first() else { return Ok(Progress::Processing) };
    remember_order(&mut *billing.pool.acquire().await?, user, &order.id).await?;
    let credited: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM credit_buckets WHERE user_id = $1 AND source_key = $2)")
            .bind(user)
            .bind(crate::server::ledger::pack_source(&order.id))
            .fetch_one(&billing.pool)
            .await?;
    Ok(if credited {
        Progress::Ready { what: order.description.clone(), is_plan: false }
    } else {
        Progress::Processing
    })
}
