//! `type = "redis"`: RESP `PING` must answer `PONG`, after `AUTH` when a password is set.

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{excerpt, Attempt, Target};
use crate::config::{CheckKind, Via};

/// A RESP array of bulk strings.
fn command(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for p in parts {
        out.extend_from_slice(format!("${}\r\n", p.len()).as_bytes());
        out.extend_from_slice(p.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

pub(crate) async fn attempt(kind: &CheckKind, target: &Target<'_>) -> Attempt {
    let CheckKind::Redis { address, password, via } = kind else {
        unreachable!("redis check");
    };
    let address_here = super::with_host_vars(address.expose(), target.member)?;
    let addr = match via {
        Via::Ssh => target
            .tunnels
            .to(&address_here)
            .await
            .map_err(|e| {
                if address.is_secret() {
                    format!("{address}: cannot forward to it")
                } else {
                    e.to_string()
                }
            })?
            .to_string(),
        Via::Direct => address_here.clone(),
    };
    let shown = address.to_string();
    let stream = TcpStream::connect(&addr).await.map_err(|e| format!("{shown}: {e}"))?;
    let mut stream = BufReader::new(stream);
    let mut reply = String::new();
    if let Some(p) = password {
        stream
            .get_mut()
            .write_all(&command(&["AUTH", p.expose()]))
            .await
            .map_err(|e| e.to_string())?;
        stream.read_line(&mut reply).await.map_err(|e| e.to_string())?;
        if !reply.starts_with("+OK") {
            // The reply is the server's; it never contains the password.
            return Err(format!("AUTH: {}", excerpt(&reply, 120)));
        }
        reply.clear();
    }
    stream
        .get_mut()
        .write_all(&command(&["PING"]))
        .await
        .map_err(|e| e.to_string())?;
    let n = stream.read_line(&mut reply).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err(format!("{shown}: connection closed without a reply"));
    }
    let reply = excerpt(&reply, 120);
    if reply == "+PONG" {
        Ok("PONG".into())
    } else {
        Err(format!("PING answered {reply}"))
    }
}
