//! One health check. TCP and HTTP checks connect to 127.0.0.1 from a socket made in
//! the container's network namespace, so they reach `network: none` containers too.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::manifest::Health;
use crate::network::tcp_socket_in;
use crate::runtime::Runtime;

/// Runs the check of `health` against container `id` (init process `pid`) once,
/// within the check's timeout.
pub async fn probe<R: Runtime>(
    runtime: &R,
    id: &str,
    pid: i32,
    health: &Health,
) -> Result<(), String> {
    let timeout = health.timeout.as_std();
    if let Some(command) = &health.exec {
        return exec(runtime, id, command, timeout).await;
    }
    let check = async {
        if let Some(tcp) = &health.tcp {
            connect(pid, tcp.port).await.map(drop)
        } else if let Some(http) = &health.http {
            get(connect(pid, http.port).await?, http.port, &http.path).await
        } else {
            Ok(())
        }
    };
    tokio::time::timeout(timeout, check)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))
        })
}

async fn exec<R: Runtime>(
    runtime: &R,
    id: &str,
    command: &[String],
    timeout: Duration,
) -> Result<(), String> {
    let output = runtime
        .exec(id, command, timeout)
        .await
        .map_err(|err| crate::error_chain(&err))?;
    if output.code == 0 {
        return Ok(());
    }
    let said = [&output.stderr, &output.stdout]
        .into_iter()
        .map(|bytes| String::from_utf8_lossy(bytes).trim().to_owned())
        .find(|text| !text.is_empty())
        .map(|text| format!(": {}", text.lines().last().unwrap_or_default()))
        .unwrap_or_default();
    Err(format!(
        "`{}` exited {}{said}",
        command.join(" "),
        output.code
    ))
}

async fn connect(pid: i32, port: u16) -> Result<TcpStream, String> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let socket = tokio::task::spawn_blocking(move || tcp_socket_in(pid))
        .await
        .map_err(|err| err.to_string())?
        .map_err(|err| format!("cannot enter the container's network: {err}"))?;
    TcpSocket::from_std_stream(std::net::TcpStream::from(socket))
        .connect(address)
        .await
        .map_err(|err| format!("connect to port {port}: {err}"))
}

/// `GET path`; 2xx and 3xx answers are healthy.
async fn get(mut stream: TcpStream, port: u16, path: &str) -> Result<(), String> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: wharf-health\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|err| format!("send request: {err}"))?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let read = stream
            .read(&mut buffer)
            .await
            .map_err(|err| format!("read answer: {err}"))?;
        answer.extend_from_slice(&buffer[..read]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response.parse(&answer);
        // The status line is all a check needs.
        if let Some(code) = response.code {
            return match code {
                200..=399 => Ok(()),
                _ => Err(format!(
                    "GET {path} answered {code} {}",
                    response.reason.unwrap_or_default()
                )),
            };
        }
        if let Err(err) = parsed {
            return Err(format!("GET {path}: not an HTTP answer ({err})"));
        }
        if read == 0 || answer.len() > 64 * 1024 {
            return Err(format!(
                "GET {path}: the connection closed without an answer"
            ));
        }
    }
}
