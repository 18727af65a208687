//! Billing details as the user entered them (name, address, VAT or tax id checked against
//! the country's format), kept here and pushed to the Polar customer, which puts them on
//! invoices and checkouts. When Polar cannot be reached they are saved here and sent with the
//! next save.

use super::customers::ensure_customer;
use super::Billing;
use super::{polar_for, Error, Result};
use crate::server::polar::client::CustomerUpdate;
use crate::server::polar::models::Address;
use crate::server::polar::PolarError;
use sqlx::PgPool;
use uuid::Uuid;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct BillingDetails {
    pub billing_email: Option<String>,
    pub company: Option<String>,
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    pub country: String,
    pub tax_id: Option<String>,
    pub tax_id_kind: Option<String>,
    pub polar_error: Option<String>,
}

impl BillingDetails {
    pub fn address(&self) -> Address {
        Address {
            line1: self.line1.clone(),
            line2: self.line2.clone(),
            postal_code: self.postal_code.clone(),
            city: self.city.clone(),
            state: self.region.clone(),
            country: self.country.clone(),
        }
    }
}

pub async fn billing_details(pool: &PgPool, user: Uuid) -> Result<Option<BillingDetails>> {
    Ok(sqlx::query_as(
        "SELECT billing_email, company, line1, line2, city, region, postal_code, country, tax_id, tax_id_kind, polar_error FROM billing_details WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(pool)
    .await?)
}

fn clean(v: Option<String>, field: &str, max: usize) -> Result<Option<String>> {
    let v = v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    if v.as_ref().is_some_and(|s| s.chars().count() > max) {
        return Err(Error::invalid(field, format!("Keep this under {max} characters.")));
    }
    Ok(v)
}

/// Checks and saves billing details, then pushes them to the Polar customer. Returns whether
/// Polar has them (`false`: saved here, Polar was unreachable; pushed on the next save).
pub async fn save_billing_details(billing: &Billing, user: Uuid, input: BillingDetails) -> Result<bool> {
    let country = input.country.trim().to_ascii_uppercase();
    if crate::domain::countries::name(&country).is_none() {
        return Err(Error::invalid("country", "Choose your country from the list."));
    }
    if crate::domain::countries::EMBARGOED.contains(&country.as_str()) {
        return Err(Error::invalid("country", "Our payment provider cannot bill customers in this country."));
    }
    let billing_email = clean(input.billing_email, "billing_email", 254)?;
    if let Some(e) = &billing_email {
        crate::domain::email::Email::parse(e).map_err(|e| Error::invalid("billing_email", e.to_string()))?;
    }
    let tax = match clean(input.tax_id, "tax_id", 40)? {
        Some(t) => Some(crate::domain::tax_id::validate(&country, &t).map_err(|m| Error::invalid("tax_id", m))?),
        None => None,
    };
    let d = BillingDetails {
        billing_email,
        company: clean(input.company, "company", 200)?,
        line1: clean(input.line1, "line1", 200)?,
        line2: clean(input.line2, "line2", 200)?,
        city: clean(input.city, "city", 100)?,
        region: clean(input.region, "region", 100)?,
        postal_code: clean(input.postal_code, "postal_code", 20)?,
        tax_id: tax.as_ref().map(|t| t.value.clone()),
        tax_id_kind: tax.as_ref().map(|t| t.kind.to_string()),
        country,
        polar_error: None,
    };
    sqlx::query(
        "INSERT INTO billing_details (user_id, billing_email, company, line1, line2, city, region, postal_code, country, tax_id, tax_id_kind, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())
         ON CONFLICT (user_id) DO UPDATE SET billing_email = $2, company = $3, line1 = $4, line2 = $5, city = $6, region = $7, postal_code = $8,
             country = $9, tax_id = $10, tax_id_kind = $11, updated_at = now()",
    )
    .bind(user)
    .bind(&d.billing_email)
    .bind(&d.company)
    .bind(&d.line1)
    .bind(&d.line2)
    .bind(&d.city)
    .bind(&d.region)
    .bind(&d.postal_code)
    .bind(&d.country)
    .bind(&d.tax_id)
    .bind(&d.tax_id_kind)
    .execute(&billing.pool)
    .await?;
    push_billing_details(billing, user, &d).await
}

async fn push_billing_details(billing: &Billing, user: Uuid, d: &BillingDetails) -> Result<bool> {
    let record = |err: Option<String>| async move {
        sqlx::query("UPDATE billing_details SET polar_error = $2, polar_synced_at = CASE WHEN $2 IS NULL THEN now() ELSE polar_synced_at END WHERE user_id = $1")
            .bind(user)
            .bind(err)
            .execute(&billing.pool)
            .await
    };
    if let Err(e) = ensure_customer(billing, super::polar(billing)?, user).await {
        record(Some("Not yet sent to our billing provider (unreachable); it will be sent on your next save.".into()))
            .await?;
        return match e {
            Error::Unavailable(_) => Ok(false),
            other => Err(other),
        };
    }
    let update = CustomerUpdate {
        billing_name: d.company.clone(),
        billing_address: Some(d.address()),
        tax_id: Some(d.tax_id.clone()),
        ..Default::default()
    };
    match polar_for(billing, user).await?.update_customer(&user.to_string(), &update).await {
        Ok(_) => {
            record(None).await?;
            Ok(true)
        }
        Err(e) if e.is_unavailable() => {
            record(Some(
                "Not yet sent to our billing provider (unreachable); it will be sent on your next save.".into(),
            ))
            .await?;
            Ok(false)
        }
        Err(PolarError::Invalid { issues, .. }) => {
            let msg = issues
                .first()
                .map(|i| i.msg.clone())
                .unwrap_or_else(|| "Our billing provider did not accept these details.".into());
            let field = issues.first().and_then(|i| i.field()).filter(|f| *f == "tax_id").unwrap_or("country");
            record(Some(msg.clone())).await?;
            Err(Error::invalid(field, format!("Polar did not accept this: {msg}")))
        }
        Err(e) => Err(e.into()),
    }
}
