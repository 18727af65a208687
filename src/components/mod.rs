//! Reusable views.

pub mod form;
pub mod layout;
