//! One module per page.

pub mod billing;
pub mod change_plan;
pub mod checkout_success;
pub mod home;
pub mod login;
pub mod not_found;
pub mod pricing;
pub mod settings_billing;
pub mod signup;
