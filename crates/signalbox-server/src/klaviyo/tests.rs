//! In-process tests of the Klaviyo API: JSON:API shapes and errors.
