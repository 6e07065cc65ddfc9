//! `type = "http"`: a request whose status (and optionally body) must match.

use std::time::Duration;

use super::{excerpt, Attempt, Target};
use crate::config::{CheckKind, Via};

pub(crate) async fn attempt(kind: &CheckKind, target: &Target<'_>) -> Attempt {
    let CheckKind::Http {
        method,
        url,
        body,
        headers,
        expect_status,
        expect_body,
        via,
    } = kind
    else {
        unreachable!("http check");
    };
    let parsed = reqwest::Url::parse(&super::with_host_vars(url.expose(), target.member)?)
        .map_err(|e| format!("bad url: {e}"))?;
    let host = parsed.host_str().ok_or("the url has no host")?.to_string();
    let port = parsed.port_or_known_default().ok_or("the url has no port")?;
    let mut client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none());
    let mut request_url = parsed.clone();
    if let Some(container) = target.container {
        // One container on its compose network, reachable from the host only:
        // plain HTTP to it (TLS, if any, ends at the proxy), the check's path
        // and Host header kept.
        let local = target.tunnels.to(container).await.map_err(|e| e.to_string())?;
        request_url.set_scheme("http").map_err(|_| "cannot set scheme")?;
        request_url
            .set_host(Some(&local.ip().to_string()))
            .map_err(|e| e.to_string())?;
        request_url
            .set_port(Some(local.port()))
            .map_err(|_| "cannot set port")?;
    } else if *via == Via::Ssh {
        // Through a tunnel from the host: nothing needs to be exposed.
        let local = target
            .tunnels
            .to(&format!("{host}:{port}"))
            .await
            .map_err(|e| e.to_string())?;
        if host.parse::<std::net::IpAddr>().is_ok() || host == "localhost" {
            request_url
                .set_host(Some(&local.ip().to_string()))
                .map_err(|e| e.to_string())?;
            request_url
                .set_port(Some(local.port()))
                .map_err(|_| "cannot set port")?;
        } else {
            // A name keeps its TLS identity; only where it connects changes.
            request_url
                .set_port(Some(local.port()))
                .map_err(|_| "cannot set port")?;
            client = client.resolve(&host, local);
        }
    }
    let client = client.build().map_err(|e| e.to_string())?;
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = client
        .request(method.clone(), request_url)
        .header(reqwest::header::HOST, authority(&parsed));
    for (k, v) in headers {
        req = req.header(k.as_str(), v.expose());
    }
    if let Some(b) = body {
        req = req.body(b.expose().to_string());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("{method} {url}: {}", error_chain(&e.without_url())))?;
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let detail = format!("HTTP {status}: {}", excerpt(&text, 200));
    if !expect_status.contains(&status) {
        return Err(format!("{detail} (expected {expect_status:?})"));
    }
    if let Some(re) = expect_body {
        if !re.is_match(&text) {
            return Err(format!("{detail} (body does not match /{re}/)"));
        }
    }
    Ok(detail)
}

fn authority(url: &reqwest::Url) -> String {
    match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
