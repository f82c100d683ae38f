//! `signalbox admin …`: console accounts. They edit the console's store directly (`console.db`
//! in the data folder, or its tables on PostgreSQL), so they work whether the server runs or not; a running server sees a change at the next
//! request. Passwords come from standard input only.

use std::io::BufRead;
use std::sync::Arc;

use anyhow::Context;
use signalbox_core::SystemClock;

use super::output::print_line;
use super::stores::Backend;
use crate::cli::{AdminCommand, GlobalArgs};

pub async fn run(global: &GlobalArgs, cmd: AdminCommand) -> anyhow::Result<()> {
    let accounts = Backend::choose(global)?
        .open_accounts(Arc::new(SystemClock))
        .await?;
    match cmd {
        AdminCommand::Create { email, .. } => {
            let password = read_password()?;
            let account = accounts
                .create(&email, &password)
                .await
                .context("cannot create the account")?;
            eprintln!(
                "account '{}' created; it signs in at the console's /sign-in",
                account.email
            );
        }
        AdminCommand::List { json } => {
            let list = accounts.list().await.context("cannot list the accounts")?;
            if json {
                for account in &list {
                    print_line(account)?;
                }
            } else {
                outln!("{:<40} CREATED", "EMAIL")?;
                for account in &list {
                    outln!(
                        "{:<40} {}",
                        account.email,
                        account.created.strftime("%Y-%m-%d %H:%M:%S UTC")
                    )?;
                }
            }
        }
        AdminCommand::Delete { email } => {
            accounts
                .delete(&email)
                .await
                .context("cannot delete the account")?;
            eprintln!("account '{email}' deleted; its sessions ended");
        }
        AdminCommand::ResetPassword { email, .. } => {
            let password = read_password()?;
            accounts
                .reset_password(&email, &password)
                .await
                .context("cannot reset the password")?;
            eprintln!("password of '{email}' changed; its sessions ended");
        }
    }
    Ok(())
}

/// The first line of standard input, without its line break.
fn read_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&line);
    if password.is_empty() {
        anyhow::bail!("no password on standard input (--password-stdin reads its first line)");
    }
    Ok(password.to_owned())
}
