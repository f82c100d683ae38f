//! Email addresses as engage keys them: [`signalbox_core::email`], the one normalisation
//! every layer shares, re-exported for engage's own modules.

pub use signalbox_core::email::{normal_form, Email, EmailError, MAX_EMAIL_LEN};
