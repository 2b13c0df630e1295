//! The coordinator's HTTP side (`coordinator start --http ADDR`): the
//! dashboard's pages, `/metrics` in Prometheus text format and the JSON API
//! under `/api/v1/`.
//! On a loopback address anyone on the machine may read it; beyond
//! loopback every request needs the coordinator's token, as a bearer token
//! or the cookie the dashboard's login sets.

mod dashboard;
mod exposition;
pub mod metrics;
mod pages;
mod tls;

pub use tls::tls_config;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flotilla_shared::{Error, Result};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::actor::CoordinatorHandle;

/// The cookie the dashboard's login sets to the token.
pub const TOKEN_COOKIE: &str = "flotilla_token";

#[derive(Clone)]
struct Http {
    handle: CoordinatorHandle,
    token: Arc<str>,
    /// Listening on loopback only: no token asked.
    open: bool,
    /// The experiments root, for the store's figures and attempts.
    root: Arc<std::path::Path>,
    figures: Arc<dashboard::FiguresCache>,
    /// Served over TLS: the login cookie is marked Secure.
    secure: bool,
}

/// Serves HTTP on `listener` until the task is aborted; returns its address.
pub fn serve(
    listener: TcpListener,
    handle: CoordinatorHandle,
    token: Arc<str>,
    root: &std::path::Path,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let address = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the HTTP listening address", e))?;
    let http = Http {
        handle,
        token,
        open: address.ip().is_loopback(),
        root: root.into(),
        figures: Default::default(),
        secure: tls.is_some(),
    };
    let router = Router::new()
        .route("/", get(dashboard::experiments))
        .route("/workers", get(dashboard::workers))
        .route("/experiments/{name}", get(dashboard::experiment))
        .route("/experiments/{name}/events", get(dashboard::events))
        .route(
            "/experiments/{name}/results.csv",
            get(dashboard::results_csv),
        )
        .route("/experiments/{name}/report", get(dashboard::report))
        .route("/experiments/{name}/plots/{file}", get(dashboard::plot))
        .route("/experiments/{name}/runs", get(dashboard::runs))
        .route("/experiments/{name}/cancel", post(dashboard::cancel))
        .route("/experiments/{name}/resume", post(dashboard::resume))
        .route("/experiments/{name}/runs/{run}", get(dashboard::run))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/experiments", get(experiments))
        .route("/api/v1/experiments/{name}", get(experiment))
        .route("/api/v1/workers", get(workers))
        .route(
            "/api/v1/experiments/{name}/runs/{run}",
            get(dashboard::run_json),
        )
        .layer(middleware::from_fn_with_state(http.clone(), authorise))
        // The login form is the one thing served without the token.
        .route("/login", get(dashboard::login_form).post(dashboard::login))
        .with_state(http);
    let task = tokio::spawn(async move {
        let served = match tls {
            Some(config) => axum::serve(tls::TlsListener::new(listener, config), router).await,
            None => axum::serve(listener, router).await,
        };
        if let Err(e) = served {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    Ok((address, task))
}

/// Beyond loopback, the token as `Authorization: Bearer …` or the login
/// cookie; a page asked for without it goes to the login form.
async fn authorise(State(http): State<Http>, request: Request, next: Next) -> Response {
    if http.open || presented_token(request.headers()).is_some_and(|t| t == &*http.token) {
        return next.run(request).await;
    }
    let path = request.uri().path();
    let is_page = !(path.starts_with("/api/") || path == "/metrics" || path.ends_with("/events"));
    if is_page {
        return axum::response::Redirect::to("/login").into_response();
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "this coordinator listens beyond loopback: present its token as 'Authorization: Bearer TOKEN'\n",
    )
        .into_response()
}

fn presented_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(TOKEN_COOKIE)?.strip_prefix('='))
}

/// An error as JSON with the status its kind calls for.
struct ApiError(Error);

impl ApiError {
    fn status(&self) -> StatusCode {
        match &self.0 {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::InvalidInput(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        (
            status,
            Json(serde_json::json!({"error": self.0.to_string()})),
        )
            .into_response()
    }
}

async fn metrics(State(http): State<Http>) -> std::result::Result<Response, ApiError> {
    let text = metrics::render(&http.handle.metrics().await.map_err(ApiError)?);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn status(State(http): State<Http>) -> std::result::Result<Response, ApiError> {
    let view = http.handle.status(None).await.map_err(ApiError)?;
    Ok(Json(view).into_response())
}

async fn experiments(State(http): State<Http>) -> std::result::Result<Response, ApiError> {
    let view = http.handle.status(None).await.map_err(ApiError)?;
    Ok(Json(view.experiments).into_response())
}

async fn experiment(
    State(http): State<Http>,
    Path(name): Path<String>,
) -> std::result::Result<Response, ApiError> {
    let view = http.handle.status(Some(name)).await.map_err(ApiError)?;
    Ok(Json(view).into_response())
}

async fn workers(State(http): State<Http>) -> std::result::Result<Response, ApiError> {
    let view = http.handle.status(None).await.map_err(ApiError)?;
    Ok(Json(view.workers).into_response())
}
