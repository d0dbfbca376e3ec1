//! Serving an axum app that charges tokens on 127.0.0.1, and a client that
//! sends its requests: a user, an estimate and the tokens really used, in
//! headers (`x-user`, `x-estimate`, `x-used`).

use std::net::SocketAddr;

use axum::Router;

/// A client of an app served on 127.0.0.1.
pub struct TokenApi {
    client: reqwest::Client,
    addr: SocketAddr,
}

impl TokenApi {
    /// Serves `app` on a free port of 127.0.0.1.
    pub async fn serve(app: Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        TokenApi {
            client: reqwest::Client::new(),
            addr,
        }
    }

    /// `POST path` for `user`, estimated at `estimate` tokens, using `used`.
    pub async fn send(
        &self,
        path: &str,
        user: &str,
        estimate: u32,
        used: u32,
    ) -> reqwest::Response {
        self.client
            .post(format!("http://{}{path}", self.addr))
            .header("x-user", user)
            .header("x-estimate", estimate.to_string())
            .header("x-used", used.to_string())
            .send()
            .await
            .unwrap()
    }
}
