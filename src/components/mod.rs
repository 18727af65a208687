//! Reusable views.

pub mod api_keys;
pub mod form;
pub mod layout;
pub mod navigate;
pub mod activity;
pub mod local_time;
