//! The text of each account mail. Plain text: it reads everywhere, and a link is a link.

use super::Mail;

fn footer(app_url: &str) -> String {
    format!("\n\n-- Tally\n{app_url}\n\nYou get this mail because of your Tally account. If it was not you, you can ignore it.")
}

pub fn verify_email(app_url: &str, to: &str, link: &str, free_credits: i64) -> Mail {
    let credits = if free_credits > 0 {
        format!(" and receive your {} free credits", crate::domain::money::group_thousands(free_credits as u64))
    } else {
        String::new()
    };
    Mail {
        kind: "verify_email",
        to: to.to_string(),
        subject: "Confirm your email address".into(),
        text: format!("Hello,\n\nConfirm this address for your Tally account{credits}:\n\n{link}\n\nThe link works once and expires in 24 hours.{}", footer(app_url)),
    }
}

pub fn reset_password(app_url: &str, to: &str, link: &str) -> Mail {
    Mail {
        kind: "reset_password",
        to: to.to_string(),
        subject: "Reset your Tally password".into(),
        text: format!(
            "Hello,\n\nSomeone (hopefully you) asked to reset the password of your Tally account. Choose a new one here:\n\n{link}\n\nThe link works once and expires in one hour. Your password stays as it is until you use it.{}",
            footer(app_url)
        ),
    }
}

pub fn password_changed(app_url: &str, to: &str) -> Mail {
    Mail {
        kind: "password_changed",
        to: to.to_string(),
        subject: "Your Tally password was changed".into(),
        text: format!(
            "Hello,\n\nThe password of your Tally account was just changed, and every other session was signed out.\n\nIf this was not you, reset your password now: {}/forgot-password{}",
            app_url.trim_end_matches('/'),
            footer(app_url)
        ),
    }
}

/// A usage alert (`domain::usage::Alert`): what crossed, what is left, where to act.
pub fn usage_alert(
    app_url: &str,
    to: &str,
    alert: crate::domain::usage::Alert,
    balance: i64,
    spent: i64,
    allotment: i64,
) -> Mail {
    use crate::domain::money::group_thousands as n;
    let usage = if allotment > 0 {
        format!("This period you have used {} of your {} credits.", n(spent.max(0) as u64), n(allotment as u64))
    } else {
        String::new()
    };
    let next = match alert {
        crate::domain::usage::Alert::OverageStarted => {
            "Further calls are billed as overage at the end of the period, up to your cap."
        }
        _ => "You can buy a credit pack, change your plan or adjust these alerts on your billing page.",
    };
    Mail {
        kind: "usage_alert",
        to: to.to_string(),
        subject: alert.headline(),
        text: format!(
            "Hello,\n\n{}. {usage} Your balance is now {} credits.\n\n{next}\n\n{}/billing{}",
            alert.headline(),
            n(balance.max(0) as u64),
            app_url.trim_end_matches('/'),
            footer(app_url)
        ),
    }
}
