//! example-app: a small HTTP service that shows a microimage works.
//!
//! At start-up it loads the CA bundle the way most Rust TLS clients do
//! (`rustls-native-certs`, which honours `SSL_CERT_FILE`) into a rustls client config with
//! the `ring` provider, and it reports its uid, the number of CA roots found and whether
//! `/tmp` is writable — on `GET /`, or once with `--check`.
//!
//! Usage: `example-app [--port PORT] [--check]`; the port also comes from `$PORT`
//! (default 8080).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// What the app found about its environment.
struct Report {
    ca_roots: usize,
    tls_ready: bool,
}

impl Report {
    fn gather() -> Report {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = rustls::RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls_ready = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .is_ok();
        Report { ca_roots: added, tls_ready }
    }

    fn json(&self) -> String {
        let greeting = if cfg!(feature = "shout") {
            "HELLO FROM EXAMPLE-APP"
        } else {
            "hello from example-app"
        };
        let cwd = std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default();
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let offset = utc_offset_seconds();
        let utc_offset = format!(
            "{}{:02}:{:02}",
            if offset < 0 { '-' } else { '+' },
            offset.abs() / 3600,
            offset.abs() % 3600 / 60
        );
        format!(
            "{{\"app\":\"example-app\",\"version\":\"{}\",\"greeting\":\"{greeting}\",\"arch\":\"{}\",\
             \"uid\":{uid},\"gid\":{gid},\"ca_roots\":{},\"tls_ready\":{},\"tmp_writable\":{},\"cwd\":{:?},\"utc_offset\":\"{utc_offset}\"}}",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::ARCH,
            self.ca_roots,
            self.tls_ready,
            tmp_writable(),
            cwd,
        )
    }
}

/// The local time's offset from UTC, as the C library sees it (`TZ` and
/// `/usr/share/zoneinfo`).
fn utc_offset_seconds() -> i64 {
    // SAFETY: time(NULL) has no preconditions; localtime_r writes only into `tm`.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        i64::from(tm.tm_gmtoff)
    }
}

fn tmp_writable() -> bool {
    let path = std::env::temp_dir().join(format!("example-app-{}", std::process::id()));
    let ok = std::fs::write(&path, b"ok").is_ok();
    let _ = std::fs::remove_file(&path);
    ok
}

fn port_from_args() -> Result<u16, String> {
    let mut args = std::env::args().skip(1);
    let mut port = std::env::var("PORT").ok();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = Some(args.next().ok_or("--port needs a value")?),
            "--check" => {}
            other => return Err(format!("unknown argument `{other}`; usage: example-app [--port PORT] [--check]")),
        }
    }
    match port {
        Some(p) => p.parse().map_err(|_| format!("`{p}` is not a port number")),
        None => Ok(8080),
    }
}

async fn handle(req: Request<hyper::body::Incoming>, report: Arc<Report>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match req.uri().path() {
        "/" => (StatusCode::OK, report.json() + "\n"),
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port = match port_from_args() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("example-app: {e}");
            std::process::exit(2);
        }
    };
    let report = Arc::new(Report::gather());
    if std::env::args().any(|a| a == "--check") {
        println!("{}", report.json());
        return;
    }
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("example-app: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("example-app listening on {addr} with {} CA roots", report.ca_roots);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let report = report.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, report.clone()));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
