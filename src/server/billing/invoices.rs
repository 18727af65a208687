//! Orders and their invoices. Polar lists a user's orders by their customer's external id
//! (so a listing is theirs); an order id from the browser is checked against the orders known
//! to be the user's ([`remember_order`]: from listings and order webhooks) before Polar is
//! asked about it.

use super::details::billing_details;
use super::Billing;
use super::{polar, polar_budget, polar_for, polar_reads, Error, Result};
use crate::server::polar::models::Order;
use crate::server::polar::PolarError;
use uuid::Uuid;

/// Records that a Polar order is `user`'s (from a listing Polar answered for that user, or a
/// webhook about their customer), so its id can be checked before Polar is asked again.
pub async fn remember_order(conn: &mut sqlx::PgConnection, user: Uuid, order_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO polar_orders (id, user_id) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING")
        .bind(order_id)
        .bind(user)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum InvoiceState {
    /// Not generated; can be.
    Available,
    Preparing,
    Ready,
    /// Not invoiceable (pending or void).
    Unavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InvoiceRow {
    pub order_id: String,
    pub date: String,
    pub description: String,
    pub amount: String,
    pub status: String,
    pub invoice: InvoiceState,
}

/// How long a customer's order list is served from `polar_order_lists`.
pub const ORDERS_TTL: chrono::Duration = chrono::Duration::seconds(60);
/// While an invoice is being generated, the list is re-read this often (the page polls).
pub const PREPARING_TTL: chrono::Duration = chrono::Duration::seconds(2);

/// Marks the user's cached order list stale (an order webhook, an invoice request).
pub async fn forget_orders(conn: &mut sqlx::PgConnection, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE polar_order_lists SET stale = true WHERE user_id = $1").bind(user).execute(conn).await?;
    Ok(())
}

/// The stored list, if fresh enough at `now` (given whether an invoice is being prepared) and
/// read after the user's latest checkout began, or fetched at or after `since` (by a read this
/// one waited for).
async fn cached_orders(
    billing: &Billing,
    user: Uuid,
    preparing: bool,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<Vec<Order>>> {
    // A list read before the user's latest checkout began may lack its order (its webhook can
    // come after the customer is back on the page): read again.
    let row: Option<(serde_json::Value, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT l.orders, l.fetched_at FROM polar_order_lists l
          WHERE l.user_id = $1 AND NOT l.stale
            AND l.fetched_at > coalesce((SELECT max(c.created_at) FROM checkouts c WHERE c.user_id = $1), '-infinity')",
    )
    .bind(user)
    .fetch_optional(&billing.pool)
    .await?;
    let ttl = if preparing { PREPARING_TTL } else { ORDERS_TTL };
    let now = chrono::Utc::now();
    Ok(row
        .filter(|(_, at)| now - *at < ttl || since.is_some_and(|s| *at >= s))
        .and_then(|(orders, _)| serde_json::from_value(orders).ok()))
}

/// The user's orders: from the cache ([`ORDERS_TTL`]), else from Polar (counted in the
/// user's budget; concurrent renders share one call) and stored.
async fn orders_of(billing: &Billing, user: Uuid, preparing: bool) -> Result<Vec<Order>> {
    let asked_at = chrono::Utc::now();
    if let Some(orders) = cached_orders(billing, user, preparing, None).await? {
        return Ok(orders);
    }
    let slot = billing.order_flights.slot(user);
    let _turn = slot.lock().await;
    if let Some(orders) = cached_orders(billing, user, preparing, Some(asked_at)).await? {
        return Ok(orders);
    }
    polar_budget(billing, user).await?;
    let fetched_at = chrono::Utc::now();
    let orders = polar_reads(billing)?.all_orders(&user.to_string()).await?;
    // Polar listed them for this user's customer: they are this user's.
    let mut tx = billing.pool.begin().await?;
    for o in &orders {
        remember_order(&mut tx, user, &o.id).await?;
    }
    sqlx::query(
        "INSERT INTO polar_order_lists (user_id, orders, fetched_at) VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE SET orders = EXCLUDED.orders, fetched_at = EXCLUDED.fetched_at, stale = false",
    )
    .bind(user)
    .bind(serde_json::to_value(&orders).map_err(|e| Error::Polar(PolarError::Decode(e.to_string())))?)
    .bind(fetched_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(orders)
}

/// The user's orders at Polar, newest first, with where each invoice stands.
pub async fn invoices(billing: &Billing, user: Uuid) -> Result<Vec<InvoiceRow>> {
    let requested: Vec<String> = sqlx::query_scalar("SELECT order_id FROM invoice_requests WHERE user_id = $1")
        .bind(user)
        .fetch_all(&billing.pool)
        .await?;
    let mut orders = orders_of(billing, user, false).await?;
    // An invoice requested but not generated yet: the list is re-read every few seconds.
    if orders.iter().any(|o| requested.contains(&o.id) && !o.is_invoice_generated) {
        orders = orders_of(billing, user, true).await?;
    }
    Ok(orders
        .into_iter()
        .map(|o| {
            let invoice = if o.is_invoice_generated {
                InvoiceState::Ready
            } else if requested.contains(&o.id) {
                InvoiceState::Preparing
            } else if matches!(o.status.as_str(), "paid" | "refunded" | "partially_refunded") {
                InvoiceState::Available
            } else {
                InvoiceState::Unavailable
            };
            InvoiceRow {
                date: o.created_at.format("%b %-d, %Y").to_string(),
                description: o.description.clone(),
                amount: crate::domain::money::format_cents_exact(o.total_amount, &o.currency),
                status: match o.status.as_str() {
                    "partially_refunded" => "Partially refunded".into(),
                    s => crate::server::util::capitalize(s),
                },
                order_id: o.id,
                invoice,
            }
        })
        .collect())
}

/// The order, if it is the user's.
async fn own_order(billing: &Billing, user: Uuid, order_id: &str) -> Result<Order> {
    if Uuid::parse_str(order_id).is_err() {
        return Err(Error::NotFound);
    }
    // Checked here first: another user's order id costs no call to Polar.
    let ours: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM polar_orders WHERE id = $1 AND user_id = $2)")
        .bind(order_id)
        .bind(user)
        .fetch_one(&billing.pool)
        .await?;
    if !ours {
        return Err(Error::NotFound);
    }
    let order = match polar_for(billing, user).await?.get_order(order_id).await {
        Ok(o) => o,
        Err(PolarError::NotFound { .. }) => return Err(Error::NotFound),
        Err(e) => return Err(e.into()),
    };
    if order.customer.as_ref().and_then(|c| c.external_id.as_deref()) != Some(user.to_string().as_str()) {
        return Err(Error::NotFound);
    }
    Ok(order)
}

/// Asks Polar for an order's invoice, first giving the order the saved billing details if it
/// has none (Polar requires a billing name and address).
pub async fn generate_invoice(billing: &Billing, user: Uuid, order_id: &str) -> Result<()> {
    let order = own_order(billing, user, order_id).await?;
    let client = polar(billing)?;
    if order.billing_name.is_none() || order.billing_address.is_none() {
        let Some(d) = billing_details(&billing.pool, user).await? else {
            return Err(Error::invalid(
                "invoice",
                "Add your billing details (name and country at least) before generating an invoice.",
            ));
        };
        let email: String =
            sqlx::query_scalar("SELECT email FROM users WHERE id = $1").bind(user).fetch_one(&billing.pool).await?;
        let name = d.company.clone().unwrap_or(email);
        client.update_order_billing(order_id, &name, &d.address()).await?;
    }
    match client.generate_invoice(order_id).await {
        Ok(()) => {}
        Err(PolarError::Conflict { .. }) => {
            return Err(Error::Conflict("This order cannot have an invoice (it is not paid).".into()))
        }
        Err(e) => return Err(e.into()),
    }
    let mut tx = billing.pool.begin().await?;
    sqlx::query("INSERT INTO invoice_requests (order_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(order_id)
        .bind(user)
        .execute(&mut *tx)
        .await?;
    forget_orders(&mut tx, user).await?;
    tx.commit().await?;
    Ok(())
}

/// The invoice's download URL, when it is ready (`None`: still preparing).
pub async fn invoice_url(billing: &Billing, user: Uuid, order_id: &str) -> Result<Option<String>> {
    own_order(billing, user, order_id).await?;
    Ok(polar_for(billing, user).await?.invoice(order_id).await?.map(|u| u.url))
}
