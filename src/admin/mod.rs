//! The admin service on `server.admin_listen`: health, readiness and Prometheus metrics.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::observability::metrics::METRICS;
use crate::routing::TableHandle;

pub struct AdminApp {
    table: TableHandle,
}

impl AdminApp {
    pub fn new(table: TableHandle) -> Self {
        AdminApp { table }
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    reply(
        status,
        "text/plain; charset=utf-8",
        format!("{body}\n").into_bytes(),
    )
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => text(200, "ok"),
            ("GET", "/readyz") => {
                // Ready once a config is loaded and at least one target is healthy.
                if self.table.load().has_healthy_target() {
                    text(200, "ready")
                } else {
                    text(503, "no healthy target")
                }
            }
            ("GET", "/metrics") => reply(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                METRICS.render(),
            ),
            _ => text(404, "not found"),
        }
    }
}
