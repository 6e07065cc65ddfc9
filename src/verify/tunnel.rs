//! The tunnels of one host's checklist: one port forward per target, opened by
//! the first check attempt that needs it, reused by every later attempt of
//! every check on that host, and closed when the checklist there ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::remote::{Remote, RemoteError};

/// The open forwards of one checklist run on one host.
pub(crate) struct Tunnels<'a> {
    remote: &'a dyn Remote,
    /// `host:port` as the host sees it → where it is reachable here.
    open: tokio::sync::Mutex<BTreeMap<String, SocketAddr>>,
}

impl<'a> Tunnels<'a> {
    /// None open yet, through `remote`.
    pub(crate) fn new(remote: &'a dyn Remote) -> Tunnels<'a> {
        Tunnels {
            remote,
            open: tokio::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// The local address of the forward to `target`, opened on first use.
    pub(crate) async fn to(&self, target: &str) -> Result<SocketAddr, RemoteError> {
        // Held while opening: two checks of one target share one forward.
        let mut open = self.open.lock().await;
        if let Some(local) = open.get(target) {
            return Ok(*local);
        }
        let local = self.remote.forward(target).await?;
        open.insert(target.to_string(), local);
        Ok(local)
    }

    /// Closes every forward opened, now.
    pub(crate) async fn close(mut self) {
        for (target, local) in std::mem::take(self.open.get_mut()) {
            // One that cannot be closed goes with the connection.
            let _ = self.remote.close_forward(&target, local).await;
        }
    }
}

impl Drop for Tunnels<'_> {
    /// A checklist cut short (its future dropped, e.g. by Ctrl-C): the
    /// transport closes these before its next command.
    fn drop(&mut self) {
        for (target, local) in std::mem::take(self.open.get_mut()) {
            self.remote.close_forward_later(&target, local);
        }
    }
}
