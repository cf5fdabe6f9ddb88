//! kube-audience-proxy: an HTTP forward proxy that injects audience-scoped Kubernetes
//! ServiceAccount tokens into the requests it forwards.
//!
//! The binary in `main.rs` is a thin shell over [`run`]; tests drive the same code through
//! [`start`], which returns a handle with the bound addresses.

pub mod app;
pub mod base64;
pub mod cli;
pub mod config;
pub mod exec;
pub mod http1;
pub mod kube;
pub mod kubeconfig;
pub mod logging;
pub mod ops;
pub mod policy;
pub mod proxy;
pub mod signal;
pub mod timefmt;
pub mod tls;
pub mod token;
pub mod upstream;
pub use app::{run, AppError};
