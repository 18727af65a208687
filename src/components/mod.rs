//! Reusable views.

pub mod activity;
pub mod api_keys;
pub mod form;
pub mod layout;
pub mod local_time;
pub mod navigate;
