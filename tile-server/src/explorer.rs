//! The web explorer: a single page at `/` and its ES modules under `/explorer/`, compiled into the
//! binary from `tile-server/explorer/` (plain files, no build step). The page reads only this origin
//! (`shards.json`, checkpoints, tiles, the search API) and verifies in the browser; the
//! Content-Security-Policy forbids everything else: no inline script or style, no other origin.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;
use cairn_store::etag_of;

use crate::handlers::respond;

/// What the explorer's responses may load: its own scripts, styles and fetches, nothing else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The explorer's files: request path, content type, bytes.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("../explorer/index.html"),
    ),
    (
        "/explorer/style.css",
        "text/css; charset=utf-8",
        include_str!("../explorer/style.css"),
    ),
    (
        "/explorer/app.js",
        "text/javascript; charset=utf-8",
        include_str!("../explorer/app.js"),
    ),
    (
        "/explorer/views.js",
        "text/javascript; charset=utf-8",
        include_str!("../explorer/views.js"),
    ),
    (
        "/explorer/tlog.js",
        "text/javascript; charset=utf-8",
        include_str!("../explorer/tlog.js"),
    ),
    (
        "/explorer/x509.js",
        "text/javascript; charset=utf-8",
        include_str!("../explorer/x509.js"),
    ),
    (
        "/explorer/entry.js",
        "text/javascript; charset=utf-8",
        include_str!("../explorer/entry.js"),
    ),
];

/// The explorer's routes, to merge into the read path.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    let mut router = Router::new();
    for &(path, content_type, body) in ASSETS {
        let body = Bytes::from_static(body.as_bytes());
        let etag = etag_of(&body);
        router = router.route(
            path,
            get(move |headers: HeaderMap| {
                let (body, etag) = (body.clone(), etag.clone());
                async move { asset(&headers, body, &etag, content_type) }
            }),
        );
    }
    router
}

fn asset(headers: &HeaderMap, body: Bytes, etag: &str, content_type: &'static str) -> Response {
    // Revalidated on every load (cheap: a 304), so an upgraded server never mixes old and new modules.
    let mut response = respond(headers, body, etag, content_type, "no-cache", true);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}
