//! The demo application: `web`, `books`, `ratings` and the `traffic` generator. These are ordinary
//! programs that know nothing of the mesh. With `HTTP_PROXY` set, HTTP clients send
//! absolute-form requests to that address; without it they connect to the service URL's host by
//! name (`--ratings-url`, `--web-url`), as a client in a pod does. The gRPC client dials
//! `BOOKS_ADDR` (a sidecar's local upstream port, or `books:9090` by name), and servers listen
//! where they are told. `weft demo` runs each one as `weft demo-service NAME`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::books::{self, BooksClient, BooksServer, Catalogue, GetBookRequest, ListBooksRequest};
use super::http::Pool;

/// Logical addresses the services use for each other: the names a program would use inside
/// Kubernetes, resolved by the mesh.
pub const WEB_URL: &str = "http://web.demo.svc.cluster.local:8080";
pub const RATINGS_URL: &str = "http://ratings.demo.svc.cluster.local:8080";
pub const BOOKS_AUTHORITY: &str = "books.demo.svc.cluster.local:9090";

/// Share of `ratings` requests answered with 500, so that success rates are visibly below 100%.
pub const RATINGS_FAILURE_RATE: f64 = 0.05;

/// Which demo program to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Name {
    /// HTTP front end: calls books (gRPC) and ratings (HTTP) for every request.
    Web,
    /// gRPC book catalogue: unary `Get`, server-streaming `List`.
    Books,
    /// HTTP ratings; fails about 5% of requests with 500.
    Ratings,
    /// Load generator calling web at a fixed rate.
    Traffic,
}

impl Name {
    pub fn as_str(self) -> &'static str {
        match self {
            Name::Web => "web",
            Name::Books => "books",
            Name::Ratings => "ratings",
            Name::Traffic => "traffic",
        }
    }
}

/// `weft demo-service`: runs one demo application service (used by `weft demo`).
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// Which service to run.
    #[arg(value_enum)]
    pub name: Name,
    /// Address to listen on (web, books, ratings).
    #[arg(long, value_name = "ADDR", conflicts_with = "listen_fd")]
    pub listen: Option<SocketAddr>,
    /// Inherited listening socket to serve on instead of --listen (how `weft demo` hands over a
    /// port it reserved).
    #[arg(long, value_name = "FD", hide = true)]
    pub listen_fd: Option<i32>,
    /// HTTP proxy for outgoing HTTP calls (web, traffic), as `http://HOST:PORT`; without one,
    /// calls go straight to the service URL's host.
    #[arg(long, env = "HTTP_PROXY", value_name = "URL")]
    pub http_proxy: Option<String>,
    /// Where web reaches the books service (gRPC): a sidecar's local upstream port (`IP:PORT`,
    /// then `:authority` names the logical service), or `HOST:PORT` resolved by name.
    #[arg(long, env = "BOOKS_ADDR", value_name = "HOST:PORT")]
    pub books_addr: Option<String>,
    /// The ratings service as web calls it (and as the traffic generator probes it).
    #[arg(long, default_value = RATINGS_URL, value_name = "URL")]
    pub ratings_url: String,
    /// The web service as the traffic generator calls it.
    #[arg(long, default_value = WEB_URL, value_name = "URL")]
    pub web_url: String,
    /// Requests per second the traffic generator sends to web.
    #[arg(long, default_value_t = 20.0, value_name = "N")]
    pub rps: f64,
}

/// Runs the chosen service until the process is stopped.
pub async fn run(args: ServiceArgs) -> anyhow::Result<()> {
    match args.name {
        Name::Ratings => serve_http(listener(&args)?, Arc::new(Ratings)).await,
        Name::Books => serve_books(listener(&args)?).await,
        Name::Web => {
            let proxy = proxy_addr(&args).await?;
            let books_addr = args
                .books_addr
                .as_deref()
                .context("web needs --books-addr (or BOOKS_ADDR)")?;
            let ratings = Upstream::new(&args.ratings_url, proxy).await?;
            let web = Web::new(ratings, books_addr)?;
            serve_http(listener(&args)?, Arc::new(web)).await
        }
        Name::Traffic => {
            let proxy = proxy_addr(&args).await?;
            let web = Upstream::new(&args.web_url, proxy).await?;
            let ratings = Upstream::new(&args.ratings_url, proxy).await?;
            traffic(web, ratings, args.rps).await
        }
    }
}

fn listener(args: &ServiceArgs) -> anyhow::Result<TcpListener> {
    let std_listener = match (args.listen, args.listen_fd) {
        (Some(addr), _) => {
            std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?
        }
        (None, Some(fd)) => {
            use std::os::fd::FromRawFd as _;
            // SAFETY: the parent passed us this descriptor as an open listening socket that nothing
            // else in this process owns.
            unsafe { std::net::TcpListener::from_raw_fd(fd) }
        }
        (None, None) => anyhow::bail!("{} needs --listen ADDR", args.name.as_str()),
    };
    std_listener.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std_listener)?)
}

/// Resolves `HTTP_PROXY` (`http://host:port`) to the address every HTTP request is sent to;
/// `None` when no proxy is set (requests go straight to the services).
async fn proxy_addr(args: &ServiceArgs) -> anyhow::Result<Option<SocketAddr>> {
    let Some(url) = args
        .http_proxy
        .clone()
        .or_else(|| std::env::var("http_proxy").ok())
        .filter(|url| !url.is_empty())
    else {
        return Ok(None);
    };
    let uri: hyper::Uri = url.parse().with_context(|| format!("HTTP_PROXY {url:?}"))?;
    let host = uri.host().context("HTTP_PROXY has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    resolve(&host, port)
        .await
        .with_context(|| format!("HTTP_PROXY host {host}"))
        .map(Some)
}

async fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?;
    addrs
        .next()
        .with_context(|| format!("{host} does not resolve"))
}

/// How an HTTP client reaches one service: through an HTTP proxy (absolute-form requests, the
/// proxy picks the destination) or directly (origin-form requests to the address the URL's host
/// resolves to, once at start: in a pod that is the service's cluster IP).
struct Upstream {
    pool: Pool,
    /// `http://HOST:PORT` of the service.
    url: String,
    via_proxy: bool,
}

impl Upstream {
    async fn new(url: &str, proxy: Option<SocketAddr>) -> anyhow::Result<Upstream> {
        let uri: hyper::Uri = url.parse().with_context(|| format!("URL {url:?}"))?;
        anyhow::ensure!(
            uri.scheme_str() == Some("http") && uri.path() == "/",
            "{url:?}: expected http://HOST[:PORT]"
        );
        let url = url.trim_end_matches('/').to_string();
        let addr = match proxy {
            Some(proxy) => proxy,
            None => {
                let host = uri.host().context("URL has no host")?;
                resolve(host, uri.port_u16().unwrap_or(80)).await?
            }
        };
        Ok(Upstream {
            pool: Pool::new(addr),
            url,
            via_proxy: proxy.is_some(),
        })
    }

    /// `GET` of `path` (with its query) on the service.
    fn get(&self, path: &str) -> anyhow::Result<Request<Full<Bytes>>> {
        let uri = if self.via_proxy {
            format!("{}{path}", self.url)
        } else {
            path.to_string()
        };
        Ok(Request::get(uri)
            .header(hyper::header::HOST, authority_of(&self.url))
            .body(Full::new(Bytes::new()))?)
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> anyhow::Result<Response<Bytes>> {
        self.pool.send(request).await
    }
}

/// One HTTP request handler; every response is complete in memory.
trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        request: Request<hyper::body::Incoming>,
    ) -> impl std::future::Future<Output = Response<Full<Bytes>>> + Send;
}

async fn serve_http<H: Handler>(listener: TcpListener, handler: Arc<H>) -> anyhow::Result<()> {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler.handle(request).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found() -> Response<Full<Bytes>> {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({"error": "not found"}),
    )
}

/// `GET /rate?book=ID` → `{"book":ID,"stars":N}`, or 500 about 5% of the time.
struct Ratings;

impl Handler for Ratings {
    async fn handle(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::GET || request.uri().path() != "/rate" {
            return not_found();
        }
        if fastrand::f64() < RATINGS_FAILURE_RATE {
            return json(
                StatusCode::INTERNAL_SERVER_ERROR,
                serde_json::json!({"error": "ratings store unavailable (injected)"}),
            );
        }
        let book = query_param(request.uri().query().unwrap_or(""), "book")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        json(
            StatusCode::OK,
            serde_json::json!({"book": book, "stars": stars(book)}),
        )
    }
}

/// A stable rating per book, 1..=5.
fn stars(book: u32) -> u32 {
    book.wrapping_mul(7) % 5 + 1
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

async fn serve_books(listener: TcpListener) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(BooksServer::new(Catalogue))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await
        .context("books gRPC server")
}

/// `GET /` → one book (gRPC `Get`) with its rating (HTTP); `GET /books` → every book (gRPC `List`).
struct Web {
    ratings: Upstream,
    books: BooksClient<tonic::transport::Channel>,
}

impl Web {
    /// `books_addr` is `IP:PORT` (a sidecar's upstream port) or `HOST:PORT` (dialed by name).
    fn new(ratings: Upstream, books_addr: &str) -> anyhow::Result<Self> {
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("http://{books_addr}"))?
            .timeout(super::http::REQUEST_TIMEOUT);
        if books_addr.parse::<SocketAddr>().is_ok() {
            // A sidecar's local upstream port stands in for the service: the :authority names
            // the logical service, as it would for a client dialing the service by name.
            endpoint = endpoint.origin(format!("http://{BOOKS_AUTHORITY}").parse()?);
        }
        Ok(Web {
            ratings,
            books: BooksClient::new(endpoint.connect_lazy()),
        })
    }

    async fn book_with_rating(&self) -> Response<Full<Bytes>> {
        let id = fastrand::u32(1..=books::COUNT);
        let mut books = self.books.clone();
        let (book, rating) = tokio::join!(books.get(GetBookRequest { id }), self.rating(id));
        let book = match book {
            Ok(book) => book.into_inner(),
            Err(status) => return dependency_failed("books", &status.to_string()),
        };
        match rating {
            Ok(rating) => json(
                StatusCode::OK,
                serde_json::json!({"book": book, "rating": rating}),
            ),
            Err(error) => dependency_failed("ratings", &format!("{error:#}")),
        }
    }

    async fn rating(&self, id: u32) -> anyhow::Result<serde_json::Value> {
        let request = self.ratings.get(&format!("/rate?book={id}"))?;
        let response = self.ratings.send(request).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "status {}",
            response.status()
        );
        Ok(serde_json::from_slice(response.body())?)
    }

    async fn all_books(&self) -> Response<Full<Bytes>> {
        let mut client = self.books.clone();
        let listed = async {
            let mut stream = client
                .list(ListBooksRequest { limit: 0 })
                .await?
                .into_inner();
            let mut books = Vec::new();
            while let Some(book) = stream.message().await? {
                books.push(book);
            }
            Ok::<_, tonic::Status>(books)
        };
        match listed.await {
            Ok(books) => json(StatusCode::OK, serde_json::json!({"books": books})),
            Err(status) => dependency_failed("books", &status.to_string()),
        }
    }
}

impl Handler for Web {
    async fn handle(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        match (request.method(), request.uri().path()) {
            (&Method::GET, "/") => self.book_with_rating().await,
            (&Method::GET, "/books") => self.all_books().await,
            _ => not_found(),
        }
    }
}

fn dependency_failed(dependency: &str, error: &str) -> Response<Full<Bytes>> {
    json(
        StatusCode::BAD_GATEWAY,
        serde_json::json!({"error": format!("{dependency}: {error}")}),
    )
}

fn authority_of(url: &str) -> &str {
    url.trim_start_matches("http://")
}

/// Calls `web` at `rps` requests per second, forever: `GET /`, and every tenth request
/// `GET /books` to exercise the streaming call. Once a second it also calls `ratings` directly,
/// as a client that should not: the demo's authorization policy admits only web there, so
/// these calls are denied (403) once the policy is in force.
async fn traffic(web: Upstream, ratings: Upstream, rps: f64) -> anyhow::Result<()> {
    anyhow::ensure!(rps > 0.0 && rps.is_finite(), "--rps must be positive");
    let (web, ratings) = (Arc::new(web), Arc::new(ratings));
    let per_second = rps.ceil().max(1.0) as u64;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rps));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0u64.. {
        ticks.tick().await;
        let path = if n % 10 == 9 { "/books" } else { "/" };
        // Each call runs on its own so a slow response does not slow the rate down.
        tokio::spawn(call(web.clone(), path));
        if n % per_second == 0 {
            tokio::spawn(call(ratings.clone(), "/rate?book=1"));
        }
    }
    Ok(())
}

/// One `GET` of the traffic generator; the outcome is only logged (the proxies count it).
async fn call(upstream: Arc<Upstream>, path: &'static str) {
    let outcome = match upstream.get(path) {
        Ok(request) => upstream.send(request).await.map(|r| r.status()),
        Err(error) => Err(error),
    };
    match outcome {
        Ok(status) => tracing::debug!(%status, path, url = upstream.url, "answered"),
        Err(error) => {
            tracing::debug!(
                error = format!("{error:#}"),
                path,
                url = upstream.url,
                "call failed"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_finds_the_named_value() {
        assert_eq!(query_param("a=1&book=7", "book"), Some("7"));
        assert_eq!(query_param("bookx=1", "book"), None);
        assert_eq!(query_param("", "book"), None);
    }

    /// Without a proxy, a client connects to the URL's host itself and sends origin-form
    /// requests naming the service in Host (what web and traffic do in a pod).
    #[tokio::test]
    async fn upstream_without_a_proxy_goes_straight_to_the_service() {
        let ratings = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = ratings.local_addr().expect("addr");
        tokio::spawn(serve_http(ratings, Arc::new(Ratings)));
        let upstream = Upstream::new(&format!("http://127.0.0.1:{}", addr.port()), None)
            .await
            .expect("upstream");
        let request = upstream.get("/rate?book=2").expect("request");
        assert_eq!(request.uri().to_string(), "/rate?book=2");
        assert_eq!(request.headers()[hyper::header::HOST], addr.to_string());
        let response = upstream.send(request).await.expect("ratings answers");
        assert!(matches!(response.status().as_u16(), 200 | 500));

        let via_proxy = Upstream::new(RATINGS_URL, Some(addr))
            .await
            .expect("upstream");
        let request = via_proxy.get("/rate?book=2").expect("request");
        assert_eq!(
            request.uri().to_string(),
            format!("{RATINGS_URL}/rate?book=2")
        );
        assert!(Upstream::new("ratings:8080", None).await.is_err());
    }

    #[test]
    fn stars_are_one_to_five() {
        assert!((0..100).map(stars).all(|s| (1..=5).contains(&s)));
    }

    #[tokio::test]
    async fn ratings_answers_over_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve_http(listener, Arc::new(Ratings)));
        let mut ok = 0;
        for _ in 0..40 {
            let response = super::super::http::get(addr, "/rate?book=3")
                .await
                .expect("ratings answers");
            assert!(matches!(response.status().as_u16(), 200 | 500));
            if response.status() == StatusCode::OK {
                let body: serde_json::Value =
                    serde_json::from_slice(response.body()).expect("json");
                assert_eq!(body["book"], 3);
                ok += 1;
            }
        }
        // 5% failures: 40 tries with fewer than 30 successes would be wildly unlikely.
        assert!(ok >= 30, "only {ok} of 40 succeeded");
    }

    /// web without a mesh: "HTTP_PROXY" points straight at ratings (which accepts the
    /// absolute-form request a proxy would get) and BOOKS_ADDR at books.
    #[tokio::test]
    async fn web_combines_books_and_ratings() {
        let ratings = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ratings_addr = ratings.local_addr().expect("addr");
        tokio::spawn(serve_http(ratings, Arc::new(Ratings)));
        let books = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let books_addr = books.local_addr().expect("addr");
        tokio::spawn(serve_books(books));
        let web = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let web_addr = web.local_addr().expect("addr");
        let via_proxy = Upstream::new(RATINGS_URL, Some(ratings_addr))
            .await
            .expect("ratings upstream");
        let handler = Web::new(via_proxy, &books_addr.to_string()).expect("web");
        tokio::spawn(serve_http(web, Arc::new(handler)));

        let mut ok = 0;
        for _ in 0..20 {
            let response = super::super::http::get(web_addr, "/")
                .await
                .expect("web answers");
            let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
            match response.status() {
                StatusCode::OK => {
                    ok += 1;
                    assert_eq!(body["book"]["id"], body["rating"]["book"]);
                    assert!(body["book"]["title"].is_string());
                }
                StatusCode::BAD_GATEWAY => {
                    assert!(body["error"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("ratings")));
                }
                other => panic!("unexpected status {other}: {body}"),
            }
        }
        assert!(ok >= 14, "only {ok} of 20 succeeded");

        let response = super::super::http::get(web_addr, "/books")
            .await
            .expect("web answers");
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = serde_json::from_slice(response.body()).expect("json");
        assert_eq!(
            body["books"].as_array().map(Vec::len),
            Some(books::COUNT as usize)
        );
    }
}
