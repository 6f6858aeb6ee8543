//! PostgreSQL for tests that take it away: a database of the test's own on the shared
//! service (dropped afterwards, also when the test fails), reached through a TCP proxy the
//! test can take down (connections cut, new ones refused) and bring back.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sqlx::Connection as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// A TCP proxy in front of PostgreSQL that the test can take down and bring back.
pub struct Proxy {
    pub port: u16,
    upstream: SocketAddr,
    accept: Mutex<Option<JoinHandle<()>>>,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    /// Starts proxying the connections `listener` accepts to `upstream`.
    pub fn start(listener: TcpListener, upstream: SocketAddr) -> Proxy {
        let proxy = Proxy {
            port: listener.local_addr().unwrap().port(),
            upstream,
            accept: Mutex::new(None),
            conns: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let (upstream, conns) = (self.upstream, Arc::clone(&self.conns));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let conn = tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                conns.lock().unwrap().push(conn.abort_handle());
            }
        });
        *self.accept.lock().unwrap() = Some(task);
    }

    /// PostgreSQL "stops": the listener closes (connections are refused) and every open
    /// connection is cut.
    pub async fn down(&self) {
        let task = self.accept.lock().unwrap().take().expect("the proxy is up");
        task.abort();
        let _ = task.await;
        for conn in self.conns.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    /// PostgreSQL is back, on the same port.
    pub async fn up(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("bind the proxy's port again");
        self.serve(listener);
    }
}

fn admin_url() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A database of this test's own on the shared PostgreSQL, dropped when this is (also when
/// the test fails).
pub struct TestDatabase {
    pub name: String,
    /// The server's URL for it (through the proxy, unless made [`TestDatabase::direct`]).
    pub url: String,
    /// Where PostgreSQL itself listens.
    pub upstream: SocketAddr,
}

impl TestDatabase {
    /// A database the server reaches through the proxy listening on `proxy_port`.
    pub async fn create(proxy_port: u16) -> TestDatabase {
        Self::make("outage", Some(proxy_port)).await
    }

    /// A database the server reaches directly (`name_prefix` names the test in
    /// `pg_database`).
    pub async fn direct(name_prefix: &str) -> TestDatabase {
        Self::make(name_prefix, None).await
    }

    async fn make(name_prefix: &str, proxy_port: Option<u16>) -> TestDatabase {
        let admin_url = admin_url();
        let mut admin = sqlx::postgres::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL must run at {admin_url} (start it as README.md says): {e}")
            });
        let name = format!(
            "{name_prefix}_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test's database");
        let _ = admin.close().await;
        let mut url = reqwest::Url::parse(&admin_url).expect("a URL");
        let host = url.host_str().expect("a host").to_owned();
        let port = url.port().unwrap_or(5432);
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .expect("resolve the PostgreSQL host")
            .next()
            .expect("an address");
        if let Some(proxy_port) = proxy_port {
            url.set_host(Some("127.0.0.1")).unwrap();
            url.set_port(Some(proxy_port)).unwrap();
        }
        url.set_path(&format!("/{name}"));
        TestDatabase {
            name,
            url: url.to_string(),
            upstream,
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread of its
        // own with a runtime of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let mut admin = sqlx::postgres::PgConnection::connect(&admin_url()).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!(
                "could not drop the test's database {}: {dropped:?}",
                self.name
            );
        }
    }
}
