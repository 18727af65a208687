//! Orders and their invoices. Polar lists a user's orders by their customer's external id
//! (so a listing is theirs); an order id from the browser is checked against the orders known
//! to be the user's ([`remember_order`]: from listings and order webhooks) before Polar is
//! asked about it.

use super::details::billing_details;
use super::{polar, polar_budget, polar_for, polar_reads, Error, Result};
use crate::server::polar::models::Order;
use crate::server::polar::PolarError;
use crate::server::state::AppState;
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

/// The user's orders at Polar, newest first, with where each invoice stands.
pub async fn invoices(state: &AppState, user: Uuid) -> Result<Vec<InvoiceRow>> {
    polar_budget(state, user).await?;
    let orders = polar_reads(state)?.all_orders(&user.to_string()).await?;
    // Polar listed them for this user's customer: they are this user's.
    let mut conn = state.pool.acquire().await?;
    for o in &orders {
        remember_order(&mut conn, user, &o.id).await?;
    }
    drop(conn);
    let requested: Vec<String> = sqlx::query_scalar("SELECT order_id FROM invoice_requests WHERE user_id = $1")
        .bind(user)
        .fetch_all(&state.pool)
        .await?;
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
async fn own_order(state: &AppState, user: Uuid, order_id: &str) -> Result<Order> {
    if Uuid::parse_str(order_id).is_err() {
        return Err(Error::NotFound);
    }
    // Checked here first: another user's order id costs no call to Polar.
    let ours: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM polar_orders WHERE id = $1 AND user_id = $2)")
        .bind(order_id)
        .bind(user)
        .fetch_one(&state.pool)
        .await?;
    if !ours {
        return Err(Error::NotFound);
    }
    let order = match polar_for(state, user).await?.get_order(order_id).await {
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
pub async fn generate_invoice(state: &AppState, user: Uuid, order_id: &str) -> Result<()> {
    let order = own_order(state, user, order_id).await?;
    let client = polar(state)?;
    if order.billing_name.is_none() || order.billing_address.is_none() {
        let Some(d) = billing_details(&state.pool, user).await? else {
            return Err(Error::invalid(
                "invoice",
                "Add your billing details (name and country at least) before generating an invoice.",
            ));
        };
        let email: String =
            sqlx::query_scalar("SELECT email FROM users WHERE id = $1").bind(user).fetch_one(&state.pool).await?;
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
    sqlx::query("INSERT INTO invoice_requests (order_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(order_id)
        .bind(user)
        .execute(&state.pool)
        .await?;
    Ok(())
}

/// The invoice's download URL, when it is ready (`None`: still preparing).
pub async fn invoice_url(state: &AppState, user: Uuid, order_id: &str) -> Result<Option<String>> {
    own_order(state, user, order_id).await?;
    Ok(polar_for(state, user).await?.invoice(order_id).await?.map(|u| u.url))
}
