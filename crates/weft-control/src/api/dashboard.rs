//! The web dashboard's assets (`dashboard/`: one HTML page, its script, its style sheet and
//! icon), compiled into the binary and served under `/dashboard/` on the API listener; `GET /`
//! redirects there. The page reads the same API as the CLI (`/v1/stat`, `/v1/edges`,
//! `/v1/routes`, `/v1/tap`) from the same origin, so nothing else is served and the
//! `Content-Security-Policy` admits only `'self'`: a reference to a CDN or an inline script
//! would not load.

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;

/// Where the dashboard lives on the API listener (what `weft dashboard` opens).
pub const PATH: &str = "/dashboard/";

/// Only this origin, for everything; no inline script or style, no frames, no plugins.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; \
    form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its name under `/dashboard/`, content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// Every file the page needs (the page links the icon so the browser asks for no `/favicon.ico`).
const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../dashboard/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../dashboard/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../dashboard/style.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../dashboard/favicon.svg"),
    },
];

/// Whether `path` (the request's, untrimmed) is the dashboard's to answer: `/` or under
/// `/dashboard`.
pub fn owns(path: &str) -> bool {
    path == "/" || path == "/dashboard" || path.starts_with(PATH)
}

/// Answers a request for `path` (one [`owns`]): `/` and `/dashboard` redirect to `/dashboard/`,
/// which is `index.html`; an asset with its type, `no-cache` (a new binary's page is fetched
/// again, revalidated cheaply) and the CSP; anything else a 404. Only `GET` and `HEAD`.
pub fn handle(method: &Method, path: &str) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut rsp = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed on {path}"),
        );
        rsp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return rsp;
    }
    if path == "/" || path == "/dashboard" {
        let mut rsp = text(StatusCode::FOUND, format!("see {PATH}"));
        rsp.headers_mut()
            .insert(header::LOCATION, HeaderValue::from_static(PATH));
        return rsp;
    }
    let name = match path.strip_prefix(PATH) {
        Some("") => "index.html",
        Some(name) => name,
        None => "",
    };
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no such dashboard file: {path} (the page is {PATH})"),
        );
    };
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from_static(asset.body)
    };
    let mut rsp = Response::new(Full::new(body));
    let headers = rsp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
    secure(headers);
    rsp
}

/// A plain-text answer (errors, redirects) with the same headers as the assets.
fn text(status: StatusCode, msg: String) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(msg + "\n")));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    secure(rsp.headers_mut());
    rsp
}

/// The headers every dashboard answer carries.
fn secure(headers: &mut http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Response<Full<Bytes>> {
        assert!(owns(path), "{path}");
        handle(&Method::GET, path)
    }

    fn header(rsp: &Response<Full<Bytes>>, name: header::HeaderName) -> &str {
        rsp.headers()
            .get(&name)
            .unwrap_or_else(|| panic!("no {name}"))
            .to_str()
            .expect("ascii")
    }

    async fn body(rsp: Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt as _;
        let bytes = rsp.into_body().collect().await.expect("body").to_bytes();
        String::from_utf8(bytes.to_vec()).expect("utf-8")
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type_no_cache_and_the_csp() {
        for (path, ty) in [
            ("/dashboard/", "text/html; charset=utf-8"),
            ("/dashboard/index.html", "text/html; charset=utf-8"),
            ("/dashboard/app.js", "text/javascript; charset=utf-8"),
            ("/dashboard/style.css", "text/css; charset=utf-8"),
            ("/dashboard/favicon.svg", "image/svg+xml"),
        ] {
            let rsp = get(path);
            assert_eq!(rsp.status(), StatusCode::OK, "{path}");
            assert_eq!(header(&rsp, header::CONTENT_TYPE), ty, "{path}");
            assert_eq!(header(&rsp, header::CACHE_CONTROL), "no-cache", "{path}");
            assert_eq!(header(&rsp, header::CONTENT_SECURITY_POLICY), CSP, "{path}");
            assert_eq!(header(&rsp, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            let len: usize = header(&rsp, header::CONTENT_LENGTH).parse().expect("len");
            assert!(len > 0, "{path}");
            assert_eq!(body(rsp).await.len(), len, "{path}");
        }
    }

    #[test]
    fn the_csp_admits_only_this_origin() {
        for directive in CSP.split(';').map(str::trim) {
            let mut words = directive.split_whitespace();
            let name = words.next().expect("directive name");
            for source in words {
                assert!(
                    ["'self'", "'none'"].contains(&source),
                    "{name} admits {source}"
                );
            }
        }
        assert!(CSP.contains("default-src 'self'"));
        assert!(CSP.contains("script-src 'self'"));
    }

    #[tokio::test]
    async fn the_page_refers_only_to_its_own_files() {
        let page = body(get("/dashboard/")).await;
        for asset in ["app.js", "style.css", "favicon.svg"] {
            assert!(page.contains(&format!("\"{asset}\"")), "page lacks {asset}");
        }
        // No other origin, no inline script or style (the CSP would refuse them).
        for text in [
            body(get("/dashboard/")).await,
            body(get("/dashboard/app.js")).await,
            body(get("/dashboard/style.css")).await,
        ] {
            // The SVG namespace is a name, not a place anything is loaded from.
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(!text.contains("http://") && !text.contains("https://"));
            assert!(!text.contains("//cdn") && !text.contains("@import"));
            assert!(!text.contains("<script>") && !text.contains("style=\""));
        }
        assert!(!page.contains("onclick") && !page.contains("onload"));
    }

    #[test]
    fn root_and_bare_path_redirect_to_the_page() {
        for path in ["/", "/dashboard"] {
            let rsp = get(path);
            assert_eq!(rsp.status(), StatusCode::FOUND, "{path}");
            assert_eq!(header(&rsp, header::LOCATION), PATH);
        }
    }

    #[tokio::test]
    async fn an_unknown_asset_is_a_404() {
        for path in [
            "/dashboard/nope.js",
            "/dashboard/../Cargo.toml",
            "/dashboard/app.js/x",
        ] {
            let rsp = get(path);
            assert_eq!(rsp.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(header(&rsp, header::CONTENT_SECURITY_POLICY), CSP);
            assert!(body(rsp).await.contains("no such dashboard file"));
        }
    }

    #[tokio::test]
    async fn only_get_and_head() {
        let rsp = handle(&Method::POST, "/dashboard/app.js");
        assert_eq!(rsp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(header(&rsp, header::ALLOW), "GET, HEAD");
        let head = handle(&Method::HEAD, "/dashboard/app.js");
        assert_eq!(head.status(), StatusCode::OK);
        assert!(body(head).await.is_empty());
    }

    #[test]
    fn the_api_is_not_the_dashboards() {
        for path in ["/v1/stat/workloads", "/live", "/dashboards", ""] {
            assert!(!owns(path), "{path}");
        }
    }
}
