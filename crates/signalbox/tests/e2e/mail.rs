//! Mail configuration of `serve`: `--smtp-url`/`SIGNALBOX_SMTP_URL` and `--mail-from`, shown
//! in the banner with the password redacted, never printed or logged.

use crate::harness::{Server, TestEnv};

const PASSWORD: &str = "s3cr3t-Pa55word";

fn mail_line(server: &Server) -> String {
    server
        .banner
        .iter()
        .find(|line| line.trim_start().starts_with("Mail "))
        .unwrap_or_else(|| panic!("no Mail line in the banner:\n{}", server.banner.join("\n")))
        .trim()
        .to_owned()
}

#[test]
fn the_banner_shows_the_smtp_server_without_its_password() {
    let env = TestEnv::new();
    let mut cmd = env.command();
    cmd.env("SIGNALBOX_LOG", "debug").args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--smtp-url",
        &format!("smtp://mailer:{PASSWORD}@127.0.0.1:2525?tls=starttls"),
        "--mail-from",
        "Shop <shop@example.com>",
    ]);
    let server = Server::spawn(cmd, env.root().join("server.log"));
    assert_eq!(
        mail_line(&server),
        "Mail           smtp://mailer:[redacted]@127.0.0.1:2525?tls=starttls, from Shop <shop@example.com>"
    );
    let banner = server.banner.join("\n");
    assert!(!banner.contains(PASSWORD), "{banner}");
    server.stop();
    let log = std::fs::read_to_string(env.root().join("server.log")).unwrap();
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(log.contains("[redacted]"), "the mail line is logged: {log}");
}

#[test]
fn the_environment_configures_mail_too() {
    let env = TestEnv::new();
    let mut cmd = env.command();
    cmd.env(
        "SIGNALBOX_SMTP_URL",
        format!("smtps://ops%40example.com:{PASSWORD}@smtp.example.com"),
    )
    .env("SIGNALBOX_MAIL_FROM", "ops@example.com")
    .args(["serve", "--listen", "127.0.0.1:0"]);
    let server = Server::spawn(cmd, env.root().join("server.log"));
    assert_eq!(
        mail_line(&server),
        "Mail           smtps://ops%40example.com:[redacted]@smtp.example.com:465, from ops@example.com"
    );
    assert!(!server.banner.join("\n").contains(PASSWORD));
}

#[test]
fn without_an_smtp_url_sending_is_off_and_says_so() {
    let env = TestEnv::new();
    let server = env.serve();
    assert_eq!(
        mail_line(&server),
        "Mail           off (no --smtp-url): emails are not sent"
    );
    if env.database_url().is_none() {
        assert!(env.data_dir().join("templates.db").exists());
    }
}

#[test]
fn bad_mail_settings_stop_the_server_without_echoing_the_password() {
    let env = TestEnv::new();
    for (args, expected) in [
        (
            vec![
                "--smtp-url".to_owned(),
                format!("ftp://mailer:{PASSWORD}@127.0.0.1:2525"),
                "--mail-from".to_owned(),
                "shop@example.com".to_owned(),
            ],
            "--smtp-url is not valid",
        ),
        (
            vec![
                "--smtp-url".to_owned(),
                format!("smtp://mailer:{PASSWORD}@127.0.0.1:2525?tls=maybe"),
                "--mail-from".to_owned(),
                "shop@example.com".to_owned(),
            ],
            "--smtp-url is not valid",
        ),
        (
            vec![
                "--smtp-url".to_owned(),
                format!("smtp://mailer:{PASSWORD}@127.0.0.1:2525"),
            ],
            "--mail-from",
        ),
        (
            vec![
                "--smtp-url".to_owned(),
                "smtp://127.0.0.1:2525".to_owned(),
                "--mail-from".to_owned(),
                "not an address".to_owned(),
            ],
            "from",
        ),
    ] {
        let mut full = vec!["serve", "--listen", "127.0.0.1:0"];
        full.extend(args.iter().map(String::as_str));
        let out = env.cli(&full);
        assert!(
            !out.status.success(),
            "{args:?} started:\n{}",
            out.describe()
        );
        assert!(
            out.stderr.contains(expected),
            "{args:?}:\n{}",
            out.describe()
        );
        assert!(!out.stderr.contains(PASSWORD), "{}", out.describe());
        assert!(!out.stdout.contains(PASSWORD), "{}", out.describe());
    }
}
