//! Reusable views.

pub mod account_notices;
pub mod activity;
pub mod api_keys;
pub mod auth;
pub mod billing_details;
pub mod credit_meter;
pub mod form;
pub mod invoices;
pub mod islands;
pub mod layout;
pub mod local_time;
pub mod plan_panel;
pub mod usage;
