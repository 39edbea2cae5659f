//! A real JWKS server on 127.0.0.1 port 0 whose key set the test can change,
//! take down and bring back, and that counts how often it is fetched.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use parking_lot::Mutex;

#[derive(Default)]
struct Shared {
    document: Mutex<String>,
    down: AtomicBool,
    fetches: AtomicUsize,
}

/// Handle to the running JWKS server.
#[derive(Clone)]
pub struct JwksServer {
    shared: Arc<Shared>,
    /// The Quay-style JWKS URL.
    pub url: String,
}

impl JwksServer {
    /// Starts serving `document` at `/keys/services/quay/keys`.
    pub async fn start(document: String) -> Self {
        let shared = Arc::new(Shared::default());
        *shared.document.lock() = document;
        let router = Router::new()
            .route("/keys/services/quay/keys", get(serve))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            shared,
            url: format!("http://{addr}/keys/services/quay/keys"),
        }
    }

    /// Publishes a new key set.
    pub fn publish(&self, document: String) {
        *self.shared.document.lock() = document;
    }

    /// Makes the server answer 503 (down) or serve again.
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// How many fetches arrived so far.
    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }
}

async fn serve(State(shared): State<Arc<Shared>>) -> (StatusCode, String) {
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    if shared.down.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "registry restarting".into(),
        );
    }
    (StatusCode::OK, shared.document.lock().clone())
}
