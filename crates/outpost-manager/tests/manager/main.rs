//! The manager over real HTTP(S): a manager on a real socket, edges and
//! admins as protocol clients in the test; the dashboard over HTTP and in
//! a real headless Chromium (chromedriver and Chromium processes).

mod alerts;
mod auth_http;
mod auth_users;
mod config;
mod dashboard_browser;
mod dashboard_harness;
mod dashboard_pages;
mod edges;
mod limits;
mod session;
mod support;
mod traffic;
