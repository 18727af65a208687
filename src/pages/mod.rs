//! One module per page.

pub mod admin;
pub mod billing;
pub mod change_plan;
pub mod checkout_success;
pub mod forgot_password;
pub mod home;
pub mod login;
pub mod not_found;
pub mod pricing;
pub mod reset_password;
pub mod settings_billing;
pub mod signup;
pub mod verify_email;
