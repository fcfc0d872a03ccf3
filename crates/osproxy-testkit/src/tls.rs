//! TLS for live tests: a throwaway CA and the certificates it signs (made
//! with the `openssl` command, EC P-256, valid two days), and a real TLS
//! terminator — nginx with basic auth — in front of a cleartext upstream.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::{free_port, wait_until};

/// A certificate authority whose files live in a directory of the test's.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    name: String,
    /// The CA certificate (PEM): what a client trusts.
    pub cert: PathBuf,
    key: PathBuf,
}

/// A certificate and its key, signed by a [`TestCa`].
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM, PKCS#8).
    pub key: PathBuf,
}

fn openssl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run openssl (scripts/setup installs it): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A new P-256 key in `key` and a certificate request for `subject` in
/// `csr`.
fn request(subject: &str, key: &Path, csr: &Path) -> Result<(), String> {
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        subject,
        "-keyout",
        path_str(key)?,
        "-out",
        path_str(csr)?,
    ])
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()))
}

impl TestCa {
    /// A new CA named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Result<TestCa, String> {
        let cert = dir.join(format!("{name}-ca.pem"));
        let key = dir.join(format!("{name}-ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} test CA"),
            "-keyout",
            path_str(&key)?,
            "-out",
            path_str(&cert)?,
        ])?;
        Ok(TestCa {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            cert,
            key,
        })
    }

    /// A server certificate for `localhost` and `127.0.0.1`, with common
    /// name `cn`, written as `<file>.pem` and `<file>.key`.
    pub fn issue(&self, file: &str, cn: &str) -> Result<Issued, String> {
        self.issue_for(file, &format!("/CN={cn}"), &[])
    }

    /// A certificate with `subject` (OpenSSL's `/CN=x/O=y` form) and, besides
    /// `localhost` and `127.0.0.1`, the DNS names `sans`.
    pub fn issue_for(&self, file: &str, subject: &str, sans: &[&str]) -> Result<Issued, String> {
        self.issue_days(file, subject, sans, 2)
    }

    /// A server certificate like [`TestCa::issue`] valid for no time at
    /// all: expired a second after it is made.
    pub fn issue_expired(&self, file: &str, cn: &str) -> Result<Issued, String> {
        let issued = self.issue_days(file, &format!("/CN={cn}"), &[], 0)?;
        std::thread::sleep(std::time::Duration::from_millis(1100));
        Ok(issued)
    }

    /// A client certificate with `subject` that stops being valid
    /// `seconds` from now (it became valid a minute ago); returns it with
    /// its notAfter in seconds since the Unix epoch. Made with `openssl ca`,
    /// which takes exact dates where `openssl x509` (3.0) takes only days.
    pub fn issue_expiring(
        &self,
        file: &str,
        subject: &str,
        seconds: u64,
    ) -> Result<(Issued, u64), String> {
        self.issue_until(file, subject, seconds, "extendedKeyUsage=clientAuth\n")
    }

    /// An intermediate CA signed by this one, named `name`, that stops
    /// being valid `seconds` from now; with its notAfter.
    pub fn intermediate_expiring(&self, name: &str, seconds: u64) -> Result<(TestCa, u64), String> {
        let (issued, not_after) = self.issue_until(
            &format!("{name}-ca"),
            &format!("/CN={name} intermediate CA"),
            seconds,
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )?;
        Ok((
            TestCa {
                dir: self.dir.clone(),
                name: name.to_string(),
                cert: issued.cert,
                key: issued.key,
            },
            not_after,
        ))
    }

    /// `issued` with this CA's certificate after it in its certificate
    /// file, so that a client presents the chain.
    pub fn chain(&self, issued: &Issued, file: &str) -> Result<Issued, String> {
        let mut pem = std::fs::read(&issued.cert).map_err(|e| e.to_string())?;
        pem.extend(std::fs::read(&self.cert).map_err(|e| e.to_string())?);
        let cert = self.dir.join(format!("{file}.pem"));
        std::fs::write(&cert, pem).map_err(|e| e.to_string())?;
        Ok(Issued {
            cert,
            key: issued.key.clone(),
        })
    }

    fn issue_until(
        &self,
        file: &str,
        subject: &str,
        seconds: u64,
        extensions: &str,
    ) -> Result<(Issued, u64), String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs();
        let stamp = |t: u64| -> Result<String, String> {
            let out = Command::new("date")
                .args(["-u", "-d", &format!("@{t}"), "+%Y%m%d%H%M%SZ"])
                .output()
                .map_err(|e| format!("cannot run date: {e}"))?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let db = self.dir.join(format!("{file}-ca-db"));
        std::fs::create_dir_all(db.join("new")).map_err(|e| e.to_string())?;
        std::fs::write(db.join("index.txt"), "").map_err(|e| e.to_string())?;
        std::fs::write(db.join("serial"), format!("{now:x}\n")).map_err(|e| e.to_string())?;
        let conf = db.join("ca.cnf");
        std::fs::write(
            &conf,
            format!(
                "[ca]\ndefault_ca = short\n[short]\ndatabase = {0}/index.txt\nnew_certs_dir = {0}/new\n\
                 serial = {0}/serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
                 [any]\ncommonName = supplied\norganizationName = optional\n",
                path_str(&db)?
            ),
        )
        .map_err(|e| e.to_string())?;
        let cert = self.dir.join(format!("{file}.pem"));
        let key = self.dir.join(format!("{file}.key"));
        let csr = self.dir.join(format!("{file}.csr"));
        let ext = self.dir.join(format!("{file}.ext"));
        std::fs::write(&ext, extensions).map_err(|e| e.to_string())?;
        request(subject, &key, &csr)?;
        let not_after = now + seconds;
        openssl(&[
            "ca",
            "-batch",
            "-notext",
            "-config",
            path_str(&conf)?,
            "-cert",
            path_str(&self.cert)?,
            "-keyfile",
            path_str(&self.key)?,
            "-in",
            path_str(&csr)?,
            "-out",
            path_str(&cert)?,
            "-extfile",
            path_str(&ext)?,
            "-startdate",
            &stamp(now - 60)?,
            "-enddate",
            &stamp(not_after)?,
        ])?;
        Ok((Issued { cert, key }, not_after))
    }

    fn issue_days(
        &self,
        file: &str,
        subject: &str,
        sans: &[&str],
        days: u32,
    ) -> Result<Issued, String> {
        let cert = self.dir.join(format!("{file}.pem"));
        let key = self.dir.join(format!("{file}.key"));
        let csr = self.dir.join(format!("{file}.csr"));
        let ext = self.dir.join(format!("{file}.ext"));
        let extra: String = sans.iter().map(|n| format!(",DNS:{n}")).collect();
        std::fs::write(
            &ext,
            format!("subjectAltName=DNS:localhost,IP:127.0.0.1{extra}\nextendedKeyUsage=serverAuth,clientAuth\n"),
        )
        .map_err(|e| e.to_string())?;
        request(subject, &key, &csr)?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            path_str(&csr)?,
            "-CA",
            path_str(&self.cert)?,
            "-CAkey",
            path_str(&self.key)?,
            "-CAcreateserial",
            "-CAserial",
            path_str(&self.dir.join(format!("{}-ca.srl", self.name)))?,
            "-days",
            &days.to_string(),
            "-extfile",
            path_str(&ext)?,
            "-out",
            path_str(&cert)?,
        ])?;
        Ok(Issued { cert, key })
    }
}

/// nginx terminating TLS (with `certificate`) and asking for basic auth
/// (`user`, `password`) in front of the cleartext `upstream`
/// (`host:port`). One process (`master_process off`), so that killing it
/// when dropped leaves no worker behind.
#[derive(Debug)]
pub struct TlsTerminator {
    nginx: Nginx,
}

/// What a [`TlsTerminator`] asks of its clients.
#[derive(Debug, Clone)]
pub enum Admission<'a> {
    /// Basic auth with this user and password.
    Basic(&'a str, &'a str),
    /// Exactly this `Authorization` header value (an API key, say).
    Authorization(&'a str),
    /// A client certificate signed by this CA file.
    ClientCertificate(&'a Path),
}

impl TlsTerminator {
    /// Starts it with basic auth on a free port and waits until it accepts
    /// connections.
    pub fn start(
        certificate: &Issued,
        upstream: &str,
        user: &str,
        password: &str,
    ) -> Result<TlsTerminator, String> {
        Self::start_with(certificate, upstream, Admission::Basic(user, password))
    }

    /// Like [`TlsTerminator::start`], admitting clients by `admission`.
    pub fn start_with(
        certificate: &Issued,
        upstream: &str,
        admission: Admission<'_>,
    ) -> Result<TlsTerminator, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port()?;
        let admit = match admission {
            Admission::Basic(user, password) => {
                let hash = Command::new("openssl")
                    .args(["passwd", "-apr1", password])
                    .output()
                    .map_err(|e| e.to_string())?;
                let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{user}:{hash}\n")).map_err(|e| e.to_string())?;
                format!(
                    "auth_basic \"cluster\";\n    auth_basic_user_file {};\n",
                    htpasswd.display()
                )
            }
            Admission::Authorization(value) => {
                format!("if ($http_authorization != \"{value}\") {{ return 401; }}\n")
            }
            Admission::ClientCertificate(ca) => format!(
                "ssl_verify_client on;\n    ssl_client_certificate {};\n",
                ca.display()
            ),
        };
        let head = nginx_head(&dir, upstream);
        let conf = format!(
            "{head}\
             server {{\n    listen 127.0.0.1:{port} ssl;\n\
             ssl_certificate {};\n    ssl_certificate_key {};\n\
             {admit}\
             client_max_body_size 200m;\n\
             location / {{ proxy_pass http://os; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
             proxy_set_header Authorization \"\"; proxy_buffering off; proxy_request_buffering off; }}\n  }}\n}}\n",
            certificate.cert.display(),
            certificate.key.display(),
        );
        Ok(TlsTerminator {
            nginx: Nginx::run(dir, &conf, port)?,
        })
    }

    /// Its `https://127.0.0.1:<port>` URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.nginx.port)
    }
}

/// An nginx process of a test's own, killed when dropped.
#[derive(Debug)]
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx with `conf` (written into `dir`) and waits until it
    /// accepts connections on `port`.
    fn run(dir: tempfile::TempDir, conf: &str, port: u16) -> Result<Nginx, String> {
        let child = run_nginx(&dir, conf, port)?;
        Ok(Nginx {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The start of an nginx configuration of a test's own: one process,
/// everything under `dir`, and `upstream` as `os`; the `http` block is
/// left open for a server.
fn nginx_head(dir: &tempfile::TempDir, upstream: &str) -> String {
    let d = dir.path().display();
    format!(
        "master_process off;\nworker_processes 1;\ndaemon off;\nerror_log {d}/error.log;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream os {{ server {upstream}; keepalive 8; }}\n"
    )
}

fn run_nginx(dir: &tempfile::TempDir, conf: &str, port: u16) -> Result<Child, String> {
    let conf_path = dir.path().join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let bin = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("nginx not found (scripts/setup installs nginx-light)")?;
    let mut child = Command::new(bin)
        .args(["-e", "stderr", "-p"])
        .arg(dir.path())
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    let addr = format!("127.0.0.1:{port}");
    let waited = wait_until(
        &format!("nginx accepting on {addr}"),
        Duration::from_secs(10),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("nginx exited with {status}"));
            }
            std::net::TcpStream::connect(&addr)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
    if let Err(e) = waited {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok(child)
}

/// nginx in front of the cleartext `upstream` (`host:port`), compressing
/// every answer for clients that accept gzip (itself: the upstream is
/// asked for plain answers). A compressed answer has no
/// length known in advance, so nginx sends it chunked: a real server's
/// chunked answers, which OpenSearch (it frames everything with a length)
/// never sends.
#[derive(Debug)]
pub struct GzipProxy {
    nginx: Nginx,
}

impl GzipProxy {
    /// Starts it on a free port and waits until it accepts connections.
    pub fn start(upstream: &str) -> Result<GzipProxy, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let port = free_port()?;
        let head = nginx_head(&dir, upstream);
        let conf = format!(
            "{head}\
             server {{\n    listen 127.0.0.1:{port};\n\
             gzip on; gzip_proxied any; gzip_types *; gzip_min_length 0;\n\
             location / {{ proxy_pass http://os; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
             proxy_buffering off; proxy_set_header Accept-Encoding \"\"; }}\n  }}\n}}\n"
        );
        Ok(GzipProxy {
            nginx: Nginx::run(dir, &conf, port)?,
        })
    }

    /// Its `http://127.0.0.1:<port>` URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.nginx.port)
    }
}
