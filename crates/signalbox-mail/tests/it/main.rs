//! Integration tests of signalbox-mail: templates, links, and sending to a real SMTP server
//! (the aiosmtpd sink in tests/smtp at the repository root).

mod checkout;
mod fuzz_templates;
mod links;
mod sink;
mod smtp;
mod templates;
