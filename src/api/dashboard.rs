//! The web dashboard at `/ui/`: four static files (HTML, two scripts, CSS) compiled into
//! the binary, served without a token. The page holds no data of its own: the browser logs in
//! with the API token (kept in `sessionStorage`, sent as an `Authorization` header, never
//! in a URL) and reads the same `/v1/` API the CLI uses, following `/v1/watch` for live
//! updates. Served by every node; nothing to install.

use actix_web::http::header;
use actix_web::web;
use actix_web::HttpResponse;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const CHARTS_JS: &str = include_str!("dashboard/charts.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Only our own files and our own API: no inline script, no other origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's paths, served without a token (listed once, for the router and for the
/// API's access decision).
pub const OPEN_PATHS: [&str; 6] = [
    "/",
    "/ui",
    "/ui/",
    "/ui/app.js",
    "/ui/charts.js",
    "/ui/style.css",
];

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(to_ui))
        .route("/ui", web::get().to(to_ui))
        .route("/ui/", web::get().to(index))
        .route("/ui/app.js", web::get().to(app_js))
        .route("/ui/charts.js", web::get().to(charts_js))
        .route("/ui/style.css", web::get().to(style_css));
}

async fn to_ui() -> HttpResponse {
    HttpResponse::Found()
        .insert_header((header::LOCATION, "/ui/"))
        .finish()
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        // A new binary may bring new files: always revalidate.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn charts_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", CHARTS_JS)
}

async fn style_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}
