//! The manager's integration tests: real sockets, real files, real
//! processes (chromedriver and Chromium for the dashboard).

mod auth_http;
mod dashboard_browser;
mod dashboard_harness;
