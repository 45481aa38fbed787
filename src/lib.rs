//! weerwal: a forward HTTP(S) proxy and compliance gateway that keeps the apps
//! banned on government devices (AliExpress, TikTok, WeChat, VKontakte, CapCut)
//! off municipal devices, and records every attempt for security officers.
//!
//! Where a request is decided: [`decision::decide`] (which asks
//! [`policy::Policy::decide`] about banned apps). Everything else is doing:
//! sockets, files, TLS. [`plumbing`] is the HTTP toolkit every listener uses.
#![forbid(unsafe_code)]

pub mod admin;
pub mod atomic_file;
pub mod audit;
pub mod ca;
pub mod calendar;
pub mod cluster;
pub mod compliance;
pub mod config;
pub mod cookies;
pub mod decision;
pub mod dns;
pub mod explain;
pub mod gateway;
pub mod history;
pub mod identity;
pub mod metrics;
pub mod notify;
pub mod pac;
pub mod pages;
pub mod plumbing;
pub mod policy;
pub mod proxy;
pub mod reload;
pub mod serve;
pub mod tls;
pub mod tokens;
